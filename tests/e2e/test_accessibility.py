"""Accessibility in a real browser: axe-core (WCAG 2.1 A/AA) on every participant step and staff page,
and a participant who uses the keyboard alone, with focus moved to each new step.

A test fails on any violation the app causes (Streamlit's own chrome is left out, see tests/e2e/axe.py).
"""

from __future__ import annotations

import os

import pytest
from sqlmodel import Session

from db.engine import make_engine
from db.migrate import upgrade
from tests.e2e.axe import app_violations, axe_source, describe
from tests.e2e.helpers import ARGS, CHROMIUM, SHOTS, AppServer, settle
from tests.participation_helpers import make_study
from workbench import participation as P
from workbench.testing.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def a11y_app(tmp_path, chromium_path):
    db_url = f"sqlite:///{tmp_path / 'a11y.db'}"
    eng = make_engine(db_url)
    upgrade(eng)
    with Session(eng) as s:
        make_study(
            s,
            name="a11y",
            model="openai/fake",
            settings={"tasks_per_participant": 1, "min_turns": 1, "max_turns": 3, "profile_mode": "assigned"},
            with_profiles=True,
        )
        tokens = P.create_invites(s, "a11y", 2)
        s.commit()
    fake = FakeLLMServer(responder=lambda req: "Here is a plan. Step one: choose a date.", latency=0.02)
    fake.start()
    env = {
        "WORKBENCH_DB_URL": db_url,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "WORKBENCH_DATA_DIR": str(tmp_path / "data"),
    }
    server = AppServer(env, tmp_path / "serve.log")
    try:
        server.start()
        yield {"base": server.base, "tokens": tokens, "engine": eng, "env": {**os.environ, **env}}
    finally:
        server.close()
        fake.stop()
        eng.dispose()


def _scan(page, source, where: str, found: dict) -> None:
    settle(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"a11y-{where}.png"), full_page=True)
    violations = app_violations(page, source)
    if violations:
        found[where] = describe(violations)


def test_participant_steps_have_no_axe_violations(a11y_app):
    from playwright.sync_api import expect, sync_playwright

    source = axe_source()
    expect.set_options(timeout=30_000)
    found: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{a11y_app['base']}/?t={a11y_app['tokens'][0]}")
        expect(page.get_by_role("button", name="I agree to take part")).to_be_visible()
        _scan(page, source, "consent", found)
        expect(page.locator("#step-consent")).to_be_focused()  # each new step takes the focus
        page.get_by_role("button", name="I agree to take part").click()
        expect(page.get_by_role("button", name="Continue")).to_be_visible()
        expect(page.locator("#step-instructions")).to_be_focused()
        _scan(page, source, "instructions", found)
        page.get_by_role("button", name="Continue").click()
        chat = page.get_by_placeholder("Type your message to the assistant")
        expect(chat).to_be_enabled()
        expect(chat).to_be_focused()
        _scan(page, source, "task", found)
        chat.fill("Help me plan a trip")
        chat.press("Enter")
        expect(page.get_by_text("Here is a plan.")).to_be_visible()
        expect(page.get_by_role("button", name="Save rating")).to_be_visible()
        expect(page.locator('[data-testid="stForm"] input').first).to_be_focused()
        _scan(page, source, "rating", found)
        form = page.locator('[data-testid="stForm"]')
        form.locator('[data-testid="stRadio"]').filter(has_text="made-up").get_by_text(
            "No", exact=True
        ).click()
        form.locator('[data-testid="stRadio"]').filter(has_text="satisfied").get_by_text(
            "4", exact=True
        ).click()
        page.get_by_role("button", name="Save rating").click()
        expect(page.get_by_text("satisfaction: 4/5")).to_be_visible()
        expect(chat).to_be_focused()  # after a saved rating the message box takes the focus
        _scan(page, source, "rated", found)
        page.get_by_role("button", name="Finish this task").click()
        expect(page.get_by_role("button", name="Submit")).to_be_visible()
        expect(page.locator("#step-post_task")).to_be_focused()
        _scan(page, source, "post-task", found)
        browser.close()
    assert not found, "\n\n".join(f"[{where}]\n{text}" for where, text in found.items())


STAFF_PAGES = [
    "",
    "studies",
    "progress",
    "transcripts",
    "simulation",
    "dashboard",
    "export",
    "annotate",
    "adjudicate",
]


def _login(page, base: str, name: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(base)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"Log out ({name})")).to_be_visible()


def test_staff_pages_have_no_axe_violations(a11y_app):
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    source = axe_source()
    for name, role in (("rita", "researcher"), ("ann", "annotator")):
        subprocess.run(
            [sys.executable, "-m", "workbench.cli", "users", "add", name, "--role", role, "--password-stdin"],
            input=f"{name}-a11y-pass-1\n",
            text=True,
            env=a11y_app["env"],
            check=True,
            capture_output=True,
        )
    found: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(a11y_app["base"])
        page.get_by_role("button", name="Log in").wait_for()
        _scan(page, source, "login", found)
        _login(page, a11y_app["base"], "rita", "rita-a11y-pass-1")
        for path in STAFF_PAGES:
            page.goto(f"{a11y_app['base']}/{path}")
            page.get_by_text("Log out (rita)").wait_for()
            _scan(page, source, f"staff-{path or 'home'}", found)
        browser.close()
    assert not found, "\n\n".join(f"[{where}]\n{text}" for where, text in found.items())
