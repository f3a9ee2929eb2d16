"""A Prolific participant is sent back to Prolific automatically by the real browser (meta refresh),
here to a stand-in completion page on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading

import pytest
from sqlmodel import Session

from db.engine import make_engine
from db.migrate import upgrade
from tests.e2e.helpers import free_port, served_page
from tests.participation_helpers import make_study

pytestmark = pytest.mark.e2e


class _Landing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"prolific landing " + self.path.encode())

    def log_message(self, *args):
        pass


def test_prolific_participant_returned_automatically(tmp_path, chromium_path):
    from playwright.sync_api import expect

    landing = http.server.HTTPServer(("127.0.0.1", free_port()), _Landing)
    threading.Thread(target=landing.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{landing.server_port}/submissions/complete?cc="
    db_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    eng = make_engine(db_url)
    upgrade(eng)
    with Session(eng) as s:
        make_study(
            s,
            name="e2e",
            settings={
                "prolific_study_id": "PSTUDY",
                "prolific_completion_url": url,
                "screenout_code": "SO-77",
                "prolific_redirect_seconds": 2,
            },
        )
        s.commit()
    try:
        with served_page(db_url, tmp_path) as (server, page):
            page.goto(f"{server.base}/?PROLIFIC_PID=5f0a1b2c3d4e&STUDY_ID=PSTUDY&SESSION_ID=s1")
            page.get_by_role("button", name="I do not agree").click()
            expect(page.get_by_text("SO-77")).to_be_visible(timeout=30_000)
            page.wait_for_url("**/submissions/complete?cc=SO-77", timeout=30_000)
            assert "prolific landing /submissions/complete?cc=SO-77" in page.content()
    finally:
        landing.shutdown()
        eng.dispose()
