"""Two `workbench serve` processes on one throw-away PostgreSQL behind Debian's nginx, configured
from scripts/nginx-workbench.conf (sticky by its cookie, websockets passed through): participants of
one study go through both servers and quotas and counterbalancing hold across them; a participant
whose server is killed reloads through the proxy and continues on the other; a staff login made on
one server is valid on the other.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import Assignment, Condition, Participant, Turn
from tests.e2e.helpers import ARGS, CHROMIUM, REPO, AppServer, free_port, settle
from tests.participation_helpers import make_study
from workbench import participation as P
from workbench.accounts import add_user
from workbench.testing.fake_llm_server import FakeLLMServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Proxy:
    """nginx in the foreground with the README's configuration, on ``port``, before ``upstreams``."""

    def __init__(self, tmp: Path, port: int, upstreams: list[int]):
        self.dir, self.port = tmp / "nginx", port
        (self.dir / "logs").mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        conf = (REPO / "scripts" / "nginx-workbench.conf").read_text()
        conf = conf.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("127.0.0.1:8501 ", f"127.0.0.1:{upstreams[0]} ")
        conf = conf.replace("127.0.0.1:8502 ", f"127.0.0.1:{upstreams[1]} ")
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.dir),
                "-c",
                str(self.dir / "nginx.conf"),
                "-g",
                f"daemon off; pid {self.dir / 'nginx.pid'}; error_log stderr;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "error.log", "w"),  # noqa: SIM115 - closed with the process
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()}")

    def upstream_of(self, path_part: str) -> int:
        """The server port that answered the last logged request containing ``path_part``."""
        for line in reversed((self.dir / "logs" / "access.log").read_text().splitlines()):
            if path_part in line:
                return int(re.search(r"upstream=127\.0\.0\.1:(\d+)", line).group(1))
        raise AssertionError(f"no request for {path_part} in the proxy's log")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)


@pytest.fixture
def farm(tmp_path, pg_url, chromium_path):
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx; scripts/setup.sh all does it)")
    eng = make_engine(pg_url)
    upgrade(eng)
    with Session(eng) as s:
        make_study(
            s,
            name="multi",
            model="openai/fake",
            contexts=1,
            with_profiles=True,
            settings={
                "tasks_per_participant": 2,
                "min_turns": 1,
                "max_turns": 4,
                "profile_mode": "assigned",
                "quota_per_condition": 2,
            },
        )
        tokens = P.create_invites(s, "multi", 3)
        add_user(s, "rita", "researcher", "a-long-password-1")
        s.commit()
    fake = FakeLLMServer(responder=lambda req: f"Reply to: {req.last_user_text[:30]}", latency=0.02).start()
    proxy_port = free_port()
    env = {
        "WORKBENCH_DB_URL": pg_url,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "sk-test",
        "WORKBENCH_DATA_DIR": str(tmp_path / "data"),
        "WORKBENCH_PUBLIC_URL": f"http://127.0.0.1:{proxy_port}",
    }
    servers = [AppServer(env, tmp_path / f"serve{i}.log") for i in range(2)]
    proxy = None
    try:
        for server in servers:
            server.start()
        proxy = Proxy(tmp_path, proxy_port, [s.port for s in servers])
        yield {"eng": eng, "tokens": tokens, "servers": {s.port: s for s in servers}, "proxy": proxy}
    finally:
        if proxy:
            proxy.stop()
        for server in servers:
            server.close()
        fake.stop()
        eng.dispose()


def _start_tasks(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("button", name="I agree to take part").click()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("Task 1 of 2")).to_be_visible()


def test_two_servers_behind_nginx(farm):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    proxy, servers, (t1, t2, t3) = farm["proxy"], farm["servers"], farm["tokens"]
    front = f"http://127.0.0.1:{proxy.port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        # participant 1 through the proxy, which keeps the browser on one server
        p1 = browser.new_context().new_page()
        _start_tasks(p1, f"{front}/?t={t1}")
        first = proxy.upstream_of(f"t={t1}")
        other = next(port for port in servers if port != first)
        # participant 2 on the other server, participant 3 (quota full) on the first
        p2 = browser.new_context().new_page()
        _start_tasks(p2, f"http://127.0.0.1:{other}/?t={t2}")
        p3 = browser.new_context().new_page()
        p3.goto(f"http://127.0.0.1:{first}/?t={t3}")
        p3.get_by_role("button", name="I agree to take part").click()
        p3.get_by_role("button", name="Continue").click()
        settle(p3)
        expect(p3.get_by_text("Task 1 of 2")).to_have_count(0)
        # participant 1 talks, loses the server, reloads through the proxy and continues on the other
        chat = p1.get_by_placeholder("Type your message to the assistant")
        chat.fill("Help me plan")
        chat.press("Enter")
        expect(p1.get_by_text("Reply to: Help me plan")).to_be_visible()
        servers[first].stop()
        p1.reload()
        expect(p1.get_by_text("Help me plan", exact=True)).to_be_visible()
        expect(p1.get_by_text("Reply to: Help me plan")).to_be_visible()
        assert proxy.upstream_of(f"t={t1}") == other
        form = p1.locator('[data-testid="stForm"]')  # the reply is rated on the other server
        form.locator('[data-testid="stRadio"]').filter(has_text="made-up").get_by_text(
            "No", exact=True
        ).click()
        form.locator('[data-testid="stRadio"]').filter(has_text="satisfied").get_by_text(
            "4", exact=True
        ).click()
        p1.get_by_role("button", name="Save rating").click()
        expect(p1.get_by_text("satisfaction: 4/5")).to_be_visible()
        # a staff login made on one server is valid on the other (one cookie name behind the proxy)
        servers[first].start()
        staff = browser.new_context().new_page()
        staff.goto(f"http://127.0.0.1:{other}/")
        staff.get_by_role("textbox", name="User name").fill("rita")
        staff.get_by_role("textbox", name="Password").fill("a-long-password-1")
        staff.get_by_role("button", name="Log in").click()
        expect(staff.get_by_text("Log out (rita)")).to_be_visible()
        staff.goto(f"http://127.0.0.1:{first}/")
        expect(staff.get_by_text("Log out (rita)")).to_be_visible()
        expect(staff.get_by_role("button", name="Log in")).to_have_count(0)
        browser.close()

    with Session(farm["eng"]) as s:
        people = {p.id: p for p in s.exec(select(Participant)).all()}
        assert len(people) == 3
        rows = s.exec(select(Assignment.participant_id, Assignment.condition_id, Assignment.position)).all()
        by_person: dict = {}
        for pid, cid, pos in rows:
            by_person.setdefault(pid, {})[pos] = cid
        conds = s.exec(select(Condition.id)).all()
        # quotas: two participants took every condition once each, the third found the study full
        assert sorted(len(v) for v in by_person.values()) == [2, 2] and len(conds) == 2
        full = [p for p in people.values() if p.id not in by_person]
        assert len(full) == 1 and full[0].status == "screened_out"
        # counterbalancing across servers: the two participants meet the conditions in opposite orders
        a, b = by_person.values()
        assert a[0] == b[1] and a[1] == b[0]
        turn = s.exec(select(Turn).where(Turn.role == "assistant")).one()
        assert turn.satisfaction == 4
