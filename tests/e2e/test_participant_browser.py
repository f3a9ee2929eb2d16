"""A whole participant session in a real browser against `workbench serve` and a fake OpenAI server.

Debian's chromium is driven by Playwright (which cannot download its own browsers here).
Screenshots go to test-output/e2e/.
"""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import Conversation, LLMCall, Participant, QuestionnaireResponse, Turn
from tests.e2e.helpers import ARGS, CHROMIUM, SHOTS, AppServer
from tests.participation_helpers import make_study, profile_answers
from workbench import participation as P
from workbench.participation.flow import profile_fields
from workbench.testing.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def served_study(tmp_path, chromium_path):
    db_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    eng = make_engine(db_url)
    upgrade(eng)
    with Session(eng) as s:
        make_study(
            s,
            name="e2e",
            model="openai/fake",
            settings={"tasks_per_participant": 2, "min_turns": 1, "max_turns": 4},
        )
        [token] = P.create_invites(s, "e2e", 1)
        s.commit()
    fake = FakeLLMServer(
        responder=lambda req: f"Here is a plan for: {req.last_user_text[:40]}. Step one.", latency=0.02
    )
    fake.start()
    server = AppServer(
        {
            "WORKBENCH_DB_URL": db_url,
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "WORKBENCH_DATA_DIR": str(tmp_path / "data"),
        },
        tmp_path / "serve.log",
    )
    try:
        server.start()
        yield {"base": server.base, "token": token, "engine": eng, "fake": fake, "restart": server.restart}
    finally:
        server.close()
        fake.stop()
        eng.dispose()


def test_participant_session_in_browser(served_study):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    base, token, eng = served_study["base"], served_study["token"], served_study["engine"]
    answers = profile_answers("en")
    fields = {f["name"]: f for f in profile_fields("en")}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{base}/?t={token}")
        page.get_by_role("button", name="I agree to take part").click()
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_text("About you", exact=True)).to_be_visible()
        page.screenshot(path=str(SHOTS / "01-profile.png"), full_page=True)
        for name, value in answers.items():
            f = fields[name]
            label = dict(f["options"])
            if f["type"] in ("choice", "multi_choice"):
                # Type the option into the select's search box and take the first match.
                testid = "stSelectbox" if f["type"] == "choice" else "stMultiSelect"
                box = page.locator(f'[data-testid="{testid}"]').filter(has_text=f["label"]).locator("input")
                box.click()
                box.press_sequentially(label[value if f["type"] == "choice" else value[0]])
                box.press("Enter")
                if f["type"] == "multi_choice":  # a single select closes itself; Escape would clear it
                    page.keyboard.press("Escape")
                expect(page.get_by_role("listbox")).to_have_count(0)  # wait until the menu has closed
            elif f["type"] == "integer":
                box = (
                    page.locator('[data-testid="stNumberInput"]').filter(has_text=f["label"]).locator("input")
                )
                box.fill(str(value))
                box.press("Tab")
            else:
                page.locator('[data-testid="stTextInput"]').filter(has_text=f["label"]).locator("input").fill(
                    value
                )
        page.screenshot(path=str(SHOTS / "01-profile-filled.png"), full_page=True)
        page.get_by_role("button", name="Continue").click()
        chat = page.get_by_placeholder("Type your message to the assistant")
        for task in range(2):
            expect(page.get_by_text(f"Task {task + 1} of 2")).to_be_visible()
            expect(chat).to_be_enabled()
            chat.fill(f"Help me with task {task + 1} <b>please</b>")
            chat.press("Enter")
            expect(page.get_by_text(f"Here is a plan for: Help me with task {task + 1}")).to_be_visible()
            if task == 0:
                # A refresh in the middle of the task loses nothing.
                page.reload()
                expect(page.get_by_text(f"Here is a plan for: Help me with task {task + 1}")).to_be_visible()
                expect(page.get_by_text("Help me with task 1 <b>please</b>", exact=True)).to_be_visible()
                page.screenshot(path=str(SHOTS / "02-after-reload.png"), full_page=True)
            else:
                # A server restart in the middle of a task loses nothing either.
                served_study["restart"]()
                page.reload()
                expect(
                    page.get_by_text(f"Help me with task {task + 1} <b>please</b>", exact=True)
                ).to_be_visible()
                expect(page.get_by_text(f"Here is a plan for: Help me with task {task + 1}")).to_be_visible()
                page.screenshot(path=str(SHOTS / "02-after-restart.png"), full_page=True)
            form = page.locator('[data-testid="stForm"]')
            form.locator('[data-testid="stRadio"]').filter(has_text="made-up").get_by_text(
                "No", exact=True
            ).click()
            form.locator('[data-testid="stRadio"]').filter(has_text="satisfied").get_by_text(
                "4", exact=True
            ).click()
            form.locator('[data-testid="stTextInput"] input').fill(f"good {task}")
            page.get_by_role("button", name="Save rating").click()
            expect(page.get_by_text("satisfaction: 4/5")).to_be_visible()
            page.screenshot(path=str(SHOTS / f"03-task{task + 1}.png"), full_page=True)
            page.get_by_role("button", name="Finish this task").click()
            expect(page.get_by_text("About the conversation you just had")).to_be_visible()
            for item_text, option in (
                ("forget", "No"),
                ("detailed", "Detailed"),
                ("useful", "Very useful"),
                ("varied", "Diverse"),
            ):
                page.locator('[data-testid="stRadio"]').filter(has_text=item_text).get_by_text(
                    option, exact=True
                ).click()
            if task == 0:
                page.locator('[data-testid="stRadio"]').filter(has_text="choose").get_by_text(
                    "Blue", exact=True
                ).click()
            page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text("Your completion code is")).to_be_visible()
        expect(page.get_by_text("COMPLETE", exact=True)).to_be_visible()
        page.screenshot(path=str(SHOTS / "04-done.png"), full_page=True)
        assert "sk-test-not-a-real-key" not in page.content()
        assert page.locator("b", has_text="please").count() == 0  # typed HTML is not rendered
        browser.close()

    with Session(eng) as s:
        p = s.exec(select(Participant)).one()
        assert p.status == "completed"
        convs = s.exec(
            select(Conversation).where(Conversation.participant_id == p.id).order_by(Conversation.id)
        ).all()
        assert len(convs) == 2 and all(c.status == "completed" for c in convs)
        for i, c in enumerate(convs):
            turns = s.exec(select(Turn).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert [t.role for t in turns] == ["user", "assistant"]  # the reload did not duplicate anything
            assert turns[0].content == f"Help me with task {i + 1} <b>please</b>"
            assert (turns[1].hallucination, turns[1].satisfaction, turns[1].satisfaction_reason) == (
                "no",
                4,
                f"good {i}",
            )
            assert turns[1].created_at and turns[1].completed_at and turns[1].llm_call_id
        calls = s.exec(select(LLMCall)).all()
        assert len(calls) == 2 and {c.purpose for c in calls} == {"assistant"}
        assert all("sk-test" not in str(c.params) for c in calls)
        q = s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "post_task")
        ).all()
        assert len(q) == 8
        att = s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "attention_check")
        ).one()
        assert att.value == "pass"
        prof = s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "profile")
        ).all()
        assert len(prof) == len(answers)
