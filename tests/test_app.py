"""AppTest tests of every page and role, with the database checked after each step."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from db.engine import ready_engine
from db.models import Assignment, Conversation, Participant, QuestionnaireResponse, SimulationRun, Study, Turn
from db.settings import Settings
from tests.participation_helpers import make_study, profile_answers
from workbench import participation as P
from workbench.llm import ScriptedModel

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

MAIN = str(Path(__file__).resolve().parent.parent / "workbench" / "app" / "main.py")
EVIL = "<img src=x onerror=alert(1)> ![pic](http://evil.example/x.png) [link](http://evil.example)"
# A prompt-injected assistant reply: markdown structure to keep, everything that loads or links to neutralise.
MD_REPLY = (
    "### Picks\n**Dune** is great.\n\n- ![x](http://127.0.0.1:9/t.png)\n- <img src=x onerror=alert(1)> <script>\n"
    "- [click](javascript:alert(1)) :red[big] $x$"
)


@pytest.fixture
def eng():
    engine = ready_engine(Settings.from_env().db_url)
    yield engine


@pytest.fixture
def scripted_assistant():
    model = ScriptedModel(lambda msgs: f"Reply {sum(m['role'] == 'user' for m in msgs)}: {EVIL}")
    P.set_model_factory(lambda engine, cfg, study_id, conv_id: model)
    yield model
    P.set_model_factory(None)


def app(**query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=30)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def participant(eng, pid) -> Participant:
    with Session(eng) as s:
        return s.get(Participant, pid)


UNSAFE = re.compile(r"(?<!\\)(<|!\[|\]\()")  # an unescaped tag, image or link


def no_unsafe_markdown(at: AppTest) -> None:
    for md in [*at.markdown, *at.caption, *at.error]:
        assert not UNSAFE.search(md.value), md.value


def test_invalid_token_shows_error(eng):
    at = app(t="not-a-token")
    assert not at.exception
    assert "not valid" in at.error[0].value


def test_participant_full_flow(eng, scripted_assistant):
    with Session(eng) as s:
        make_study(s, settings={"tasks_per_participant": 2, "min_turns": 1, "max_turns": 3})
        [token] = P.create_invites(s, "pilot", 1)
        s.commit()
        pid = s.exec(select(Participant.id)).one()
    at = app(t=token)
    assert not at.exception, at.exception
    assert at.header[0].value == "Consent"
    at.button[0].click().run()  # agree
    assert participant(eng, pid).state["step"] == "instructions"
    at.button[0].click().run()
    assert participant(eng, pid).state["step"] == "profile"
    # submitting an empty profile keeps the participant on the page with a message
    at.button[0].click().run()
    assert at.error and participant(eng, pid).state["step"] == "profile"
    answers = profile_answers()
    for sb in at.selectbox:
        sb.set_value(answers[sb.key.removeprefix("profile_")])
    for ms in at.multiselect:
        ms.set_value(answers[ms.key.removeprefix("profile_")])
    for ni in at.number_input:
        ni.set_value(answers[ni.key.removeprefix("profile_")])
    for ti in at.text_input:
        ti.set_value(answers[ti.key.removeprefix("profile_")])
    at.button[0].click().run()
    assert not at.exception, at.exception
    p = participant(eng, pid)
    assert p.state["step"] == "task" and p.profile_id is not None
    for task in range(2):
        assert at.header[0].value == f"Task {task + 1} of 2"
        at.chat_input[0].set_value("Hi ![me](http://evil.example/me.png)").run()  # sends, then streams
        with Session(eng) as s:
            turns = s.exec(
                select(Turn)
                .join(Conversation)
                .where(Conversation.participant_id == pid, Conversation.status == "in_progress")
                .order_by(Turn.index)
            ).all()
            assert [t.role for t in turns] == ["user", "assistant"]
            assert turns[0].content == "Hi ![me](http://evil.example/me.png)"
        no_unsafe_markdown(at)
        assert at.chat_input[0].disabled  # rate first
        at.radio(key="h_1").set_value("no")
        at.radio(key="s_1").set_value(4)
        at.text_input(key="r_1").set_value("clear answer")
        at.button[0].click().run()  # Save rating (first button on the page is the form submit)
        with Session(eng) as s:
            t = s.exec(
                select(Turn)
                .join(Conversation)
                .where(
                    Conversation.participant_id == pid, Conversation.status == "in_progress", Turn.index == 1
                )
            ).one()
            assert (t.hallucination, t.satisfaction, t.satisfaction_reason) == ("no", 4, "clear answer")
        finish = [b for b in at.button if b.label == "Finish this task"]
        finish[0].click().run()
        assert participant(eng, pid).state["step"] == "post_task"
        for item, value in {
            "Memorization": "no",
            "Detail": "brief",
            "Availability": "somewhat",
            "Diversity": "single",
        }.items():
            at.radio(key=f"q_{item}").set_value(value)
        if task == 0:
            at.radio(key="q_attention").set_value("red")
        else:
            assert not [r for r in at.radio if r.key == "q_attention"]
        at.button[0].click().run()
        assert not at.exception, at.exception
    p = participant(eng, pid)
    assert p.status == "completed" and p.state["step"] == "done"
    assert at.code[0].value == "COMPLETE"
    with Session(eng) as s:
        assert {a.status for a in s.exec(select(Assignment)).all()} == {"completed"}
        att = s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "attention_check")
        ).one()
        assert att.value == "fail"


def test_reload_mid_task_resumes(eng, scripted_assistant):
    with Session(eng) as s:
        make_study(s, settings={"profile_mode": "assigned"}, with_profiles=True)
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        P.send_message(s, p, "typed before the crash")
        s.commit()
    # A new browser session (refresh / restart): the pending reply is produced and nothing is lost.
    at = app(t=token)
    assert not at.exception, at.exception
    msgs = [m for m in at.chat_message]
    assert len(msgs) == 2 and msgs[0].markdown[0].value == "typed before the crash"
    at2 = app(t=token)
    assert len(at2.chat_message) == 2 and scripted_assistant.calls and len(scripted_assistant.calls) == 1


def test_llm_error_shows_retry(eng):
    from workbench.llm import LLMError

    model = ScriptedModel([LLMError("the service is down"), "Back again."])
    P.set_model_factory(lambda *a: model)
    try:
        with Session(eng) as s:
            make_study(s, settings={"profile_mode": "assigned"}, with_profiles=True)
            [token] = P.create_invites(s, "pilot", 1)
            p = P.open_participant(s, token)
            P.give_consent(s, p, True)
            P.finish_instructions(s, p)
            s.commit()
        at = app(t=token)
        at.chat_input[0].set_value("my long carefully typed message").run()
        # a short notice; the provider's error stays in the server log
        assert [e.value for e in at.error] == [
            "The assistant is temporarily unavailable. Your message is saved; please try again in a moment."
        ]
        assert [b.label for b in at.button if b.label == "Try again"]
        with Session(eng) as s:
            assert s.exec(select(Turn.content)).all() == ["my long carefully typed message"]
        [b for b in at.button if b.label == "Try again"][0].click().run()
        assert not at.error
        with Session(eng) as s:
            assert s.exec(select(Turn.content).order_by(Turn.index)).all() == [
                "my long carefully typed message",
                "Back again.",
            ]
    finally:
        P.set_model_factory(None)


def test_decline_shows_screenout_code(eng):
    with Session(eng) as s:
        make_study(s, settings={"screenout_code": "SO-123"})
        [token] = P.create_invites(s, "pilot", 1)
        s.commit()
    at = app(t=token)
    at.button[1].click().run()
    assert at.code[0].value == "SO-123"
    with Session(eng) as s:
        assert s.exec(select(Participant.status)).one() == "screened_out"


def test_prolific_entry_replaces_ids_with_token(eng):
    with Session(eng) as s:
        make_study(s, settings={"prolific_study_id": "PSTUDY"})
        s.commit()
    at = app(PROLIFIC_PID="abc123", STUDY_ID="PSTUDY", SESSION_ID="sess1")
    assert not at.exception, at.exception
    assert "t" in at.query_params and "PROLIFIC_PID" not in at.query_params
    assert at.header[0].value == "Consent"
    with Session(eng) as s:
        p = s.exec(select(Participant)).one()
        assert p.external_source == "prolific" and p.external_id == "abc123" and p.pseudonym != "abc123"
        assert p.invite_token_hash == P.hash_token(
            at.query_params["t"][0] if isinstance(at.query_params["t"], list) else at.query_params["t"]
        )


def test_prolific_participant_is_sent_back_automatically(eng):
    url = "https://app.prolific.com/submissions/complete?cc="
    with Session(eng) as s:
        make_study(
            s,
            settings={
                "prolific_study_id": "PSTUDY",
                "prolific_completion_url": url,
                "screenout_code": "SO-9",
                "prolific_redirect_seconds": 3,
            },
        )
        s.commit()
    at = app(PROLIFIC_PID="abc123", STUDY_ID="PSTUDY", SESSION_ID="sess1")
    at.button[1].click().run()  # decline consent
    assert at.code[0].value == "SO-9"
    tags = [m.value for m in at.markdown if "http-equiv" in m.value]
    assert tags == [f'<meta http-equiv="refresh" content="3;url={url}SO-9">']
    assert any("3 seconds" in c.value for c in at.caption)
    # 0 turns the automatic return off (the button stays); a non-http address is refused
    with Session(eng) as s:
        st_ = s.exec(select(Study)).one()
        st_.settings = {**st_.settings, "prolific_redirect_seconds": 0}
        s.add(st_)
        s.commit()
    at.run()
    assert not [m for m in at.markdown if "http-equiv" in m.value]
    from pydantic import ValidationError

    from workbench.studies import StudySettings

    with pytest.raises(ValidationError):
        StudySettings(prolific_completion_url='javascript:alert(1)"')
    assert P.redirect_tag('https://x.org/?a="b"&c=<d>', 2) == (
        '<meta http-equiv="refresh" content="2;url=https://x.org/?a=&quot;b&quot;&amp;c=&lt;d&gt;">'
    )


def test_login_required_and_wrong_password(eng):
    from workbench.accounts import add_user

    with Session(eng) as s:
        add_user(s, "rita", "researcher", "correct horse")
        s.commit()
    at = app()
    assert at.title[0].value == "LLM user workbench"
    at.text_input[0].set_value("rita")
    at.text_input[1].set_value("wrong password")
    at.button[0].click().run()
    assert "wrong password" in at.error[0].value and "user" not in at.session_state
    at.text_input[1].set_value("correct horse")
    at.button[0].click().run()
    assert at.session_state["user"]["role"] == "researcher"
    assert at.title[0].value == "Studies"


def logged_in(role: str, page: str | None = None) -> AppTest:
    """The app in a browser session logged in as "tester" with ``role`` (a real account and login:
    every page run checks the login against the database)."""
    from workbench.accounts import add_user, create_session

    with Session(ready_engine(Settings.from_env().db_url)) as s:
        user = add_user(s, "tester", role, "tester-password", update=True)
        token = create_session(s, user)
        s.commit()
    at = AppTest.from_file(MAIN, default_timeout=30)
    at.session_state["_staff_session"] = token
    at.run()
    if page:
        at.switch_page(f"views/{page}").run()
    return at


@pytest.mark.parametrize(
    "page", ["studies.py", "progress.py", "transcripts.py", "simulation.py", "export.py"]
)
def test_researcher_pages_refuse_annotators(eng, page):
    at = AppTest.from_file(str(Path(MAIN).parent / "views" / page), default_timeout=30)
    at.session_state["user"] = {"id": 1, "name": "ann", "role": "annotator"}
    at.run()
    assert at.error and "access" in at.error[0].value
    at = AppTest.from_file(str(Path(MAIN).parent / "views" / page), default_timeout=30).run()
    assert at.warning and "log in" in at.warning[0].value


def _collected_study(eng, reply=None):
    with Session(eng) as s:
        make_study(s, settings={"min_turns": 1, "tasks_per_participant": 1})
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        P.submit_profile(s, p, profile_answers())
        P.send_message(s, p, EVIL)
        s.commit()
        pid = p.id
    "".join(P.stream_reply(eng, pid, lambda *a: ScriptedModel([reply or "Sure " + EVIL])))
    with Session(eng) as s:
        P.rate_reply(s, s.get(Participant, pid), 1, "yes", 2, EVIL)
        s.commit()


def test_home_lists_studies_with_counts(eng):
    _collected_study(eng)
    at = logged_in("researcher")
    assert not at.exception, at.exception
    df = at.dataframe[0].value
    assert set(df["study"]) == {"pilot"} and df["human"].sum() == 1 and df["agent"].sum() == 0
    # the scenario by its display name beside the key (the page shows the name)
    assert df["scenario_name"].tolist() != df["scenario"].tolist() and all(df["scenario_name"])


def test_home_hides_user_kinds_from_annotators(eng):
    """Counts by user kind would hint at who the users in an annotator's queue are."""
    _collected_study(eng)
    at = logged_in("annotator")
    assert not at.exception, at.exception
    assert not at.dataframe
    texts = " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.title]).lower()
    assert "human" not in texts and "agent" not in texts and "user kind" not in texts


def test_progress_and_transcripts(eng):
    _collected_study(eng)
    at = logged_in("researcher", "progress.py")
    assert not at.exception, at.exception
    status = at.dataframe[0].value
    assert dict(zip(status["status"], status["participants"])) == {"active": 1}
    at = logged_in("researcher", "transcripts.py")
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 1
    texts = [m.value for m in at.markdown]
    assert any("onerror" in t for t in texts)
    no_unsafe_markdown(at)
    # one human conversation and no agent one: the page says there is no match, and why
    assert any("No matched conversation" in c.value for c in at.caption)
    # the condition list follows the user-kind filter
    [b for b in at.selectbox if b.label == "User kind"][0].set_value("agent").run()
    assert [b for b in at.selectbox if b.label == "Condition"][0].options == ["(all)"]


def test_studies_page_settings_and_invites(eng):
    with Session(eng) as s:
        make_study(s)
        s.commit()
    at = logged_in("researcher", "studies.py")
    assert not at.exception, at.exception
    form_inputs = [t for t in at.text_input if t.label == "Completion code"]
    form_inputs[0].set_value("DONE-42")
    [t for t in at.text_input if t.label.startswith("Contact for participants")][0].set_value(
        " study@example.org "
    )
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    assert not at.exception, at.exception
    with Session(eng) as s:
        assert s.exec(select(Study)).one().settings["completion_code"] == "DONE-42"
        assert s.exec(select(Study)).one().settings["contact_text"] == "study@example.org"
    [n for n in at.number_input if n.label.startswith("Seconds before Prolific")][0].set_value(9)
    [t for t in at.text_input if t.label.startswith("Prolific completion URL")][0].set_value("ftp://x")
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    assert any("prolific_completion_url" in e.value.replace("\\", "") for e in at.error), [
        e.value for e in at.error
    ]
    with Session(eng) as s:
        assert (
            "prolific_redirect_seconds" not in s.exec(select(Study)).one().settings
            or s.exec(select(Study)).one().settings["prolific_redirect_seconds"] == 5
        )
    [t for t in at.text_input if t.label.startswith("Prolific completion URL")][0].set_value(
        "https://app.prolific.com/submissions/complete?cc="
    )
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    with Session(eng) as s:
        assert s.exec(select(Study)).one().settings["prolific_redirect_seconds"] == 9
    # no WORKBENCH_PUBLIC_URL and no browser address (AppTest): the documented default
    assert [t for t in at.text_input if t.label == "Public address of this app"][
        0
    ].value == "http://localhost:8501"
    [n for n in at.number_input if n.label == "How many invite links"][0].set_value(3)
    [b for b in at.button if b.label == "Create invite links"][0].click().run()
    links = [t for t in at.text_area if t.label == "Invite links for pilot"][0].value.splitlines()
    assert len(links) == 3 and all("?t=" in link for link in links)
    with Session(eng) as s:
        hashes = set(s.exec(select(Participant.invite_token_hash)).all())
    assert hashes == {P.hash_token(link.split("?t=")[1]) for link in links}


def test_studies_page_refuses_empty_codes_and_keeps_links_with_their_study(eng):
    with Session(eng) as s:
        make_study(s)
        make_study(s, name="second")
        s.commit()
    at = logged_in("researcher", "studies.py")
    [t for t in at.text_input if t.label == "Completion code"][0].set_value("  ")
    [t for t in at.text_area if t.label == "Consent text"][0].set_value("")
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    assert any("consent text and completion code cannot be empty" in e.value for e in at.error), [
        e.value for e in at.error
    ]
    with Session(eng) as s:
        stored = s.exec(select(Study).where(Study.name == "pilot")).one().settings
    assert stored.get("completion_code", "COMPLETE") == "COMPLETE" and stored.get("consent_text", "x")
    # links created for one study stay labelled with it when another study is chosen
    [b for b in at.button if b.label == "Create invite links"][0].click().run()
    at.selectbox(key="invite_study").set_value("second").run()
    assert not at.exception, at.exception
    assert [t.label for t in at.text_area if t.label.startswith("Invite links")] == ["Invite links for pilot"]


def test_simulation_and_export_pages_render(eng):
    with Session(eng) as s:
        make_study(s)
        s.commit()
    for page in ("simulation.py", "export.py"):
        at = logged_in("researcher", page)
        assert not at.exception, at.exception
    # a model the workbench does not know is refused at once, and its name is shown as typed
    at = logged_in("researcher", "simulation.py")
    [t for t in at.text_input if t.label.startswith("Simulator model")][0].set_value("bogus/**model**")
    [b for b in at.button if b.label == "Start simulation"][0].click().run()
    assert at.error and "unknown model provider 'bogus'" in at.error[0].value.replace("\\", "")
    assert "\\*\\*model\\*\\*" in at.error[0].value and not at.info  # escaped; nothing "running"
    with Session(eng) as s:
        assert not s.exec(select(SimulationRun)).all()


def test_chinese_interface(eng):
    with Session(eng) as s:
        make_study(s, settings={"interface_language": "zh"})
        [token] = P.create_invites(s, "pilot", 1)
        s.commit()
    at = app(t=token)
    assert not at.exception, at.exception
    assert at.header[0].value == "知情同意" and at.button[0].label == "我同意参加"
    at.button[0].click().run()
    at.button[0].click().run()  # instructions: continue
    # the selects' empty state is in Chinese too (not Streamlit's "Choose an option")
    assert at.selectbox and {sb.proto.placeholder for sb in at.selectbox} == {"请选择"}
    assert at.multiselect and {ms.proto.placeholder for ms in at.multiselect} == {"请选择（可多选）"}


@pytest.mark.parametrize(
    "role,page,allowed",
    [
        ("annotator", "annotate.py", True),
        ("annotator", "adjudicate.py", False),
        ("researcher", "adjudicate.py", True),
        ("researcher", "dashboard.py", True),
        ("annotator", "studies.py", False),
        ("annotator", "dashboard.py", False),
    ],
)
def test_navigation_by_role(eng, role, page, allowed):
    """Other engineers' pages are in the navigation for the right roles only (when their files exist)."""
    if not (Path(MAIN).parent / "views" / page).exists():
        pytest.skip(f"{page} is not written yet")
    at = logged_in(role)
    if allowed:
        at.switch_page(f"views/{page}")  # raises if the page is not in this role's navigation
    else:
        with pytest.raises(Exception, match="Could not find a navigation page"):
            at.switch_page(f"views/{page}")


def test_studies_page_creates_study_from_packs(eng):
    at = logged_in("researcher", "studies.py")
    assert not at.exception, at.exception
    [t for t in at.text_input if t.label == "Study name"][0].set_value("from-ui")
    [m for m in at.multiselect if m.label.startswith("Scenarios")][0].set_value(["recipe_planning"])
    [n for n in at.number_input if n.label == "Tasks per participant"][0].set_value(1)
    [b for b in at.button if b.label == "Create study"][0].click().run()
    assert not at.exception, at.exception
    assert any("Created study" in s.value for s in at.success), [e.value for e in at.error]
    with Session(eng) as s:
        study = s.exec(select(Study).where(Study.name == "from-ui")).one()
        assert study.settings["tasks_per_participant"] == 1
        from db.models import Condition, Scenario

        keys = set(
            s.exec(
                select(Scenario.key)
                .join(Condition, Condition.scenario_id == Scenario.id)
                .where(Condition.study_id == study.id)
            ).all()
        )
        assert keys == {"recipe_planning"}


def test_studies_page_shows_why_a_scenario_pack_is_invalid(eng, tmp_path, monkeypatch):
    """A bad pack in WORKBENCH_SCENARIO_DIRS: the Create tab says which file and what is wrong."""
    (tmp_path / "broken.yaml").write_text("kind: scenario\nkey: [unclosed\n", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_SCENARIO_DIRS", str(tmp_path))
    at = logged_in("researcher", "studies.py")
    assert not at.exception, at.exception
    [warning] = [w.value for w in at.warning if "scenario library" in w.value]
    assert "broken" in warning and "invalid YAML" in warning, warning


def test_progress_shows_dropouts(eng):
    from datetime import timedelta

    from db.types import utcnow

    with Session(eng) as s:
        make_study(s, settings={"idle_timeout_minutes": 5})
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        p.last_seen_at = utcnow() - timedelta(minutes=30)
        s.commit()
    at = logged_in("researcher", "progress.py")
    assert not at.exception, at.exception
    dropouts = at.dataframe[2].value
    assert list(dropouts["status"]) == ["abandoned"] and list(dropouts["step"]) == ["expired"]
    assert "p-" in dropouts["participant"][0]  # pseudonyms only


def test_transcripts_side_by_side_with_matched_agent(eng):
    from db.models import Conversation as Conv
    from db.models import Turn as T

    _collected_study(eng)
    with Session(eng) as s:
        human = s.exec(select(Conv).where(Conv.user_kind == "human")).one()
        agent = Conv(
            study_id=human.study_id,
            condition_id=human.condition_id,
            user_kind="agent",
            source="simulated",
            twin_of_id=human.id,
        )
        s.add(agent)
        s.flush()
        s.add(T(conversation_id=agent.id, index=0, role="user", content="I am the simulated twin"))
        s.commit()
        human_id = human.id
    at = logged_in("researcher", "transcripts.py")
    [sb for sb in at.selectbox if sb.label == "Open conversation"][0].set_value(human_id).run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    assert any("simulated twin" in t for t in texts)
    assert any(t.startswith("**Matched conversation") for t in texts)


def test_simulation_page_runs_twins_in_background(eng):
    import time

    from db.models import SimulationRun

    _collected_study(eng)  # one human conversation, finished (unfinished ones are not twinned)
    with Session(eng) as s:
        P.finish_task(s, s.exec(select(Participant)).one())
        s.commit()
    at = logged_in("researcher", "simulation.py")
    [t for t in at.text_input if t.label.startswith("Simulator model")][0].set_value("scripted/sim")
    [n for n in at.number_input if n.label.startswith("Maximum user turns")][0].set_value(2)
    [c for c in at.checkbox if c.label.startswith("Digital twins")][0].check()
    [b for b in at.button if b.label == "Start simulation"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from workbench.simulation.runs import simulation_status

    key = at.session_state["sim_key"]
    deadline = time.time() + 60
    while simulation_status(key)["running"] and time.time() < deadline:
        time.sleep(0.2)
    assert simulation_status(key)["error"] is None, simulation_status(key)["error"]
    with Session(eng) as s:
        human = s.exec(select(Conversation).where(Conversation.user_kind == "human")).one()
        agents = s.exec(select(Conversation).where(Conversation.user_kind == "agent")).all()
        assert [a.twin_of_id for a in agents] == [human.id] and agents[0].condition_id == human.condition_id
        assert s.exec(select(SimulationRun)).one().study_id == human.study_id
    at.run()
    assert at.dataframe[0].value["completed"].sum() + at.dataframe[0].value["failed"].sum() == 1


def test_export_page_offers_downloads(eng):
    _collected_study(eng)
    at = logged_in("researcher", "export.py")
    at.radio[0].set_value("csv")
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [b.label for b in at.get("download_button")]
    assert any("turns" in label for label in labels) and any("conversations" in label for label in labels)
    first = Path(at.session_state["export"]["dir"])
    assert first.is_dir() and first.parent.name == "workbench-exports"
    # another format: the csv buttons go away until that export is made (never another export's files)
    at.radio[0].set_value("jsonl").run()
    assert not at.get("download_button") and "press Export" in at.caption[-1].value
    stale = first.parent / "export-stale-test"
    stale.mkdir(exist_ok=True)
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert any(b.label == "Download conversations.jsonl" for b in at.get("download_button"))
    assert not first.exists()  # the previous export of the session is deleted...
    assert not stale.exists()  # ... and any export folder older than a day


def assert_safe_reply(value: str) -> None:
    """An assistant reply's markdown: headings and bold kept, nothing that would load, link or run."""
    assert value.startswith("### Picks") and "**Dune**" in value
    assert not UNSAFE.search(value), value
    assert "![" not in value and "](" not in value and "\\[image" in value
    assert "\\:\u2060red" in value and "\\$x\\$" in value and "javascript\\:" in value


def test_assistant_markdown_rendered_safely_in_chat_and_transcripts(eng):
    from workbench.app.safe_text import escape_markdown

    model = ScriptedModel(lambda msgs: MD_REPLY)
    P.set_model_factory(lambda engine, cfg, study_id, conv_id: model)
    try:
        with Session(eng) as s:
            make_study(s, settings={"min_turns": 1, "tasks_per_participant": 1})
            [token] = P.create_invites(s, "pilot", 1)
            p = P.open_participant(s, token)
            P.give_consent(s, p, True)
            P.finish_instructions(s, p)
            P.submit_profile(s, p, profile_answers())
            s.commit()
        at = app(t=token)
        at.chat_input[0].set_value("**hi** ![me](http://evil.example/me.png)").run()  # sends, streams, reruns
        assert not at.exception, at.exception
        user, assistant = at.chat_message[0], at.chat_message[1]
        assert user.markdown[0].value == escape_markdown("**hi** ![me](http://evil.example/me.png)")
        assert_safe_reply(assistant.markdown[0].value)
    finally:
        P.set_model_factory(None)


def test_transcripts_render_reply_markdown_safely(eng):
    from workbench.app.safe_text import escape_markdown

    _collected_study(eng, reply=MD_REPLY)
    at = logged_in("researcher", "transcripts.py")
    assert not at.exception, at.exception
    msgs = at.chat_message
    assert msgs[0].markdown[0].value == escape_markdown(EVIL)
    assert_safe_reply(msgs[1].markdown[0].value)
    assert not any(m.proto.allow_html for m in at.markdown)


@pytest.mark.parametrize(
    "page,key",
    [
        ("simulation.py", "sim_study"),
        ("transcripts.py", "tr_study"),
        ("progress.py", "progress_study"),
        ("export.py", "export_study"),
    ],
)
def test_researcher_pages_keep_the_study_in_the_address(eng, page, key):
    """A reload (same address) shows the study chosen before, not the first one; an unknown name in
    the address falls back to the first study."""
    with Session(eng) as s:
        make_study(s)
        make_study(s, name="zeta")
        s.commit()
    for wanted, shown in (("zeta", "zeta"), ("gone", "pilot")):
        at = AppTest.from_file(str(Path(MAIN).parent / "views" / page), default_timeout=30)
        at.session_state["user"] = {"id": 1, "name": "r", "role": "researcher"}
        at.query_params[key] = wanted
        at.run()
        assert not at.exception, at.exception
        assert [b.value for b in at.selectbox if b.label == "Study"] == [shown]


def _in_task(eng, settings=None, language=None, prolific=False):
    """A participant at their first task; returns the token."""
    with Session(eng) as s:
        extra = {"prolific_study_id": "STUDY1"} if prolific else {}
        make_study(s, settings={"profile_mode": "assigned", **extra, **(settings or {})}, with_profiles=True)
        if prolific:
            p, token = P.enter_prolific(s, "pid1", "STUDY1", "SESS1", study_name="pilot")
            P.open_participant(s, token)
        else:
            [token] = P.create_invites(s, "pilot", 1, language=language)
            p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        s.commit()
    return token


def _turns(eng):
    with Session(eng) as s:
        return s.exec(select(Turn.content).order_by(Turn.index)).all()


def test_overlong_message_stays_on_the_page(eng, scripted_assistant):
    from workbench.participation.chat import MAX_MESSAGE_CHARS

    token = _in_task(eng)
    at = app(t=token)
    assert at.chat_input[0].proto.max_chars == 0  # the browser never drops a long paste on its own
    long = "x" * (MAX_MESSAGE_CHARS + 1)
    at.chat_input[0].set_value(long).run()
    assert not at.exception, at.exception
    assert _turns(eng) == []  # nothing stored
    [warning] = at.warning
    assert f"{MAX_MESSAGE_CHARS + 1} characters" in warning.value and f"{MAX_MESSAGE_CHARS}" in warning.value
    [kept] = at.text_area
    assert kept.value == long
    at.run()  # it stays until the participant acts
    assert at.text_area[0].value == long and at.warning
    reloaded = app(t=token)  # a reload (a new browser session) shows it too: it is on the record
    assert [t.value for t in reloaded.text_area] == [long] and f"{MAX_MESSAGE_CHARS + 1} characters" in (
        reloaded.warning[0].value
    )
    at.text_area[0].set_value("x" * 10)
    [b for b in at.button if b.label == "Send"][0].click().run()
    assert _turns(eng)[0] == "x" * 10 and not at.text_area and not at.warning
    assert not app(t=token).text_area  # gone from the record once sent


def test_message_from_a_second_tab_is_kept_with_the_reason(eng):
    """Tab A sends; tab B (drawn before) sends too: B's text and the reason stay on B's page, also
    after the rerun that streams A's pending reply there."""
    from workbench.llm import LLMError

    model = ScriptedModel([LLMError("down"), "Reply to A."])
    P.set_model_factory(lambda *a: model)
    try:
        token = _in_task(eng)
        tab_a, tab_b = app(t=token), app(t=token)
        tab_a.chat_input[0].set_value("from tab A").run()  # stored; the reply fails in tab A
        tab_b.chat_input[0].set_value("from tab B").run()  # refused; B's page then produces A's reply
        assert not tab_b.exception, tab_b.exception
        assert _turns(eng) == ["from tab A", "Reply to A."]
        assert [t.value for t in tab_b.text_area] == ["from tab B"]
        assert "has not replied to your previous message" in tab_b.warning[0].value
        tab_b.run()
        assert [t.value for t in tab_b.text_area] == ["from tab B"]
        send_b = [b for b in tab_b.button if b.label == "Send"][0]
        assert send_b.disabled  # rate A's reply first
        assert [t.value for t in app(t=token).text_area] == ["from tab B"]  # also after a reload
        [b for b in tab_b.button if b.label == "Discard"][0].click().run()
        assert not tab_b.text_area and not tab_b.warning
        assert not app(t=token).text_area  # discarded from the record
    finally:
        P.set_model_factory(None)


def test_limit_message_only_with_a_finish_button(eng):
    from workbench.llm import LLMError

    model = ScriptedModel([LLMError("down"), "Back again."])
    P.set_model_factory(lambda *a: model)
    try:
        token = _in_task(eng, settings={"min_turns": 1, "max_turns": 1})
        at = app(t=token)
        at.chat_input[0].set_value("last message").run()
        assert [b for b in at.button if b.label == "Try again"]
        assert not at.info and not [b for b in at.button if b.label == "Finish this task"]
        [b for b in at.button if b.label == "Try again"][0].click().run()
        assert not at.info  # the reply waits for its rating
        at.radio(key="h_1").set_value("no")
        at.radio(key="s_1").set_value(4)
        at.button[0].click().run()
        assert "maximum number of messages" in at.info[0].value
        assert [b for b in at.button if b.label == "Finish this task"]
    finally:
        P.set_model_factory(None)


def test_expired_session_shows_typed_text_and_contact(eng, scripted_assistant):
    from datetime import timedelta

    from db.types import utcnow

    token = _in_task(eng, settings={"idle_timeout_minutes": 5, "contact_text": "study@example.org"})
    at = app(t=token)
    with Session(eng) as s:
        p = s.exec(select(Participant)).one()
        p.last_seen_at = utcnow() - timedelta(minutes=6)
        s.add(p)
        s.commit()
    at.chat_input[0].set_value("typed while away").run()
    assert not at.exception, at.exception
    assert "expired" in at.warning[0].value
    # the contact exactly as typed (no invisible autolink guard inside the address), copyable
    assert [c.value for c in at.code] == ["typed while away", "study@example.org"]
    assert any("contact the research team" in m.value for m in at.markdown)
    assert _turns(eng) == []


def test_expired_prolific_session_chinese_offers_the_return(eng, scripted_assistant):
    from datetime import timedelta

    from db.types import utcnow

    url = "https://app.prolific.com/submissions/complete?cc="
    token = _in_task(
        eng,
        prolific=True,
        settings={
            "idle_timeout_minutes": 5,
            "interface_language": "zh",
            "prolific_completion_url": url,
            "screenout_code": "SO-7",
        },
    )
    at = app(t=token)
    at.chat_input[0].set_value("长消息").run()
    assert _turns(eng)[0] == "长消息"
    with Session(eng) as s:
        p = s.exec(select(Participant)).one()
        p.last_seen_at = utcnow() - timedelta(minutes=6)
        s.add(p)
        s.commit()
    at.run()
    assert at.warning[0].value == "由于长时间没有操作，本次会话已过期。"
    assert any("返回 Prolific" in m.value for m in at.markdown)
    assert [c.value for c in at.code] == ["SO-7"]
    [link] = at.get("link_button")
    assert link.proto.url == url + "SO-7" and not [m for m in at.markdown if "http-equiv" in m.value]


def test_tables_leave_missing_text_empty():
    """A missing text value shows as an empty cell, not Streamlit's grey "None"; numbers keep their type."""
    import pandas as pd
    from streamlit.testing.v1 import AppTest

    def page():
        import pandas as pd

        from workbench.app.common import table

        table(pd.DataFrame({"simulator": [None, "sim-0"], "effect": [float("nan"), 0.5]}))

    at = AppTest.from_function(page).run()
    assert not at.exception, at.exception
    shown = at.dataframe[0].value
    assert shown["simulator"].tolist() == ["", "sim-0"]
    assert pd.api.types.is_float_dtype(shown["effect"])


def test_database_down_shows_a_short_notice_not_a_traceback(monkeypatch):
    """Participants and staff get one bilingual notice (no URL, no traceback) while the database
    cannot be reached; the details go to the server log."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WORKBENCH_DB_URL", f"postgresql://wb:secret@127.0.0.1:{port}/wb")
    notice = (
        "The study is temporarily unavailable. Please try again in a minute. / 研究暂时无法访问，请稍后再试。"
    )
    at = app(t="some-invite-token")  # a participant link
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [notice]
    at = app()  # staff: the login form needs no database until it is sent
    at.text_input[0].set_value("rita")
    at.text_input[1].set_value("pw")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [notice]
    page = "\n".join(str(el.value) for el in at.main if hasattr(el, "value"))
    assert "127.0.0.1" not in page and "postgresql" not in page and "Traceback" not in page


# --- a message typed while the database cannot be reached -----------------------------------------


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://wb:secret@127.0.0.1:{port}/wb"


def _offered_again(at: AppTest, text: str, notice: str) -> None:
    assert not at.exception, at.exception
    assert [t.value for t in at.text_area] == [text]
    assert notice in at.warning[0].value.replace("\\", "")  # shown escaped (plain text)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_message_sent_while_the_database_is_unreachable_is_offered_again(use_db, monkeypatch, language):
    """The database goes away between two runs of a participant's page (the server stopped): the
    message sent then is shown with the notice, offered again (prefilled, in the participant's
    language) once the database is back, stored only when sent again."""
    from workbench.participation.texts import ui

    model = ScriptedModel(["A reply."])
    P.set_model_factory(lambda *a: model)
    try:
        eng = ready_engine(use_db)
        token = _in_task(eng, language=language)
        at = app(t=token)
        monkeypatch.setenv("WORKBENCH_DB_URL", _closed_port_url())
        at.chat_input[0].set_value("typed while the database was down").run()
        assert not at.exception, at.exception
        assert "temporarily unavailable" in at.error[-1].value
        assert [c.value for c in at.code] == ["typed while the database was down"]  # on the page, to copy
        monkeypatch.setenv("WORKBENCH_DB_URL", use_db)
        at.run()
        _offered_again(at, "typed while the database was down", ui(language)["db_unsent"])
        assert _turns(eng) == []  # nothing half-written
        [b for b in at.button if b.label == ui(language)["send_again"]][0].click().run()
        assert not at.exception, at.exception
        assert _turns(eng) == ["typed while the database was down", "A reply."]
        assert not at.text_area
    finally:
        P.set_model_factory(None)


@pytest.mark.postgres
def test_postgres_stopping_mid_send_keeps_the_message(pg_url, monkeypatch):
    """PostgreSQL drops every connection of the study's database (and takes no new ones) while the
    page is storing the message: the transaction is lost whole (no turn, no kept text on the
    record), the text stays in the browser session and is offered again once the server is back."""
    import psycopg

    from workbench import participation
    from workbench.participation.texts import ui

    monkeypatch.setenv("WORKBENCH_DB_URL", pg_url)
    eng = ready_engine(pg_url)
    token = _in_task(eng)
    at = app(t=token)
    admin_url = pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    dbname = pg_url.rsplit("/", 1)[1]
    real_send = participation.send_message

    def server_stops(allow: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,)
                )

    def send_as_the_server_stops(session, p, text, kept=False):
        session.flush()
        server_stops(allow=False)
        return real_send(session, p, text, kept=kept)

    monkeypatch.setattr(participation, "send_message", send_as_the_server_stops)
    at.chat_input[0].set_value("typed as the server stopped").run()
    assert not at.exception, at.exception
    assert "temporarily unavailable" in at.error[-1].value
    assert [c.value for c in at.code] == ["typed as the server stopped"]
    monkeypatch.setattr(participation, "send_message", real_send)
    server_stops(allow=True)
    at.run()
    _offered_again(at, "typed as the server stopped", ui("en")["db_unsent"])
    assert _turns(eng) == [] and participant(eng, 1).state.get("unsent") is None


def test_simulation_page_plans_before_starting_and_shows_every_run(eng):
    """The dry run says how many conversations, calls and dollars a choice means; a started run
    shows its planned total, progress and spend to another researcher's session too."""
    import time

    with Session(eng) as s:
        make_study(s)
        s.commit()
    at = logged_in("researcher", "simulation.py")
    [t for t in at.text_input if t.label.startswith("Simulator model")][0].set_value("scripted/sim")
    [n for n in at.number_input if n.label.startswith("Maximum user turns")][0].set_value(2)
    [b for b in at.button if b.label == "Plan (dry run)"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    plan = " ".join(m.value for m in at.markdown)
    assert re.search(r"\d+ conversations, 0 already complete", plan) and "projected calls" in plan
    with Session(eng) as s:
        assert not s.exec(select(SimulationRun)).all()  # a plan starts nothing
    [b for b in at.button if b.label == "Start simulation"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from workbench.simulation.runs import simulation_status

    key = at.session_state["sim_key"]
    deadline = time.time() + 60
    while simulation_status(key)["running"] and time.time() < deadline:
        time.sleep(0.2)
    other = logged_in("researcher", "simulation.py")  # another researcher's session
    runs = other.dataframe[0].value
    assert runs["planned"].iloc[0] >= 1 and runs["progress"].iloc[0] == 1.0
    assert {"spend_usd", "budget_usd"} <= set(runs.columns)
    # spending by purpose, model and run: the table of `workbench costs --study NAME`
    costs = next(d.value for d in other.dataframe if "purpose" in d.value.columns)
    assert costs["purpose"].iloc[-1] == "total" and costs["calls"].iloc[-1] >= 1
    assert (costs["run_id"] == runs["run"].iloc[0]).any()  # named as the runs table names the run


def test_studies_page_says_created_above_the_form_and_clears_it(eng):
    at = logged_in("researcher", "studies.py")
    assert at.title[0].value == "Study setup"  # not the Home page's heading
    [t for t in at.text_input if t.label == "Study name"][0].set_value("cleared")
    [m for m in at.multiselect if m.label.startswith("Scenarios")][0].set_value(["recipe_planning"])
    [b for b in at.button if b.label == "Create study"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [ok] = [s for s in at.success if "Created study" in s.value]
    kinds = [type(el).__name__ for el in at.tabs[0].children.values()]
    assert kinds[0] == "Success", kinds  # the outcome first, the form below it
    assert [t.value for t in at.text_input if t.label == "Study name"] == [""]  # ready for the next one
    assert [m.value for m in at.multiselect if m.label.startswith("Scenarios")] == [[]]
    # a failed creation keeps what was typed
    [t for t in at.text_input if t.label == "Study name"][0].set_value("cleared")
    [b for b in at.button if b.label == "Create study"][0].click().run()
    assert "already exists" in at.error[0].value
    assert [t.value for t in at.text_input if t.label == "Study name"] == ["cleared"]


def _twinned_study(session):
    """The pilot study (4 designed conditions, participants' own profiles) with one completed human
    conversation on a twin condition and its digital twin."""
    from db.models import Condition

    study = make_study(session)
    base = session.exec(
        select(Condition).where(Condition.study_id == study.id).order_by(Condition.id)
    ).first()
    twin = Condition(
        study_id=study.id,
        key=f"{base.key}|p-0123",
        scenario_id=base.scenario_id,
        task_context_id=base.task_context_id,
        assistant_config_id=base.assistant_config_id,
    )
    session.add(twin)
    session.flush()
    for kind in ("human", "agent"):
        session.add(
            Conversation(
                study_id=study.id, condition_id=twin.id, user_kind=kind, replicate=0, status="completed"
            )
        )
    session.add(
        Conversation(study_id=study.id, condition_id=base.id, user_kind="human", status="in_progress")
    )
    session.commit()
    return study


def test_condition_coverage_shows_every_condition_and_folds_twins(engine):
    from db.repo import condition_coverage_df

    with Session(engine) as s:
        study = _twinned_study(s)
        df = condition_coverage_df(s, study.id)
    assert list(df["condition"]) == [
        "travel_planning/0",
        "travel_planning/1",
        "recipe_planning/0",
        "recipe_planning/1",
    ]
    first = df.iloc[0]
    assert (first["human_completed"], first["human_in_progress"], first["agent_completed"]) == (1, 1, 1)
    assert list(df["coverage"]) == ["human and agent", "none", "none", "none"]
    assert set(df["profile"]) == {"each participant's own"} and set(df["scenario"]) == {
        "Travel Planning",
        "Recipe Planning",
    }


def test_progress_page_shows_uncovered_conditions(eng):
    with Session(eng) as s:
        _twinned_study(s)
    at = logged_in("researcher", "progress.py")
    assert not at.exception, at.exception
    assert "Conditions covered by user kind" in [h.value for h in at.subheader]
    coverage = at.dataframe[1].value
    assert len(coverage) == 4 and (coverage["coverage"] == "none").sum() == 3
    assert not any("|" in c for c in coverage["condition"])  # twin conditions folded in
    assert any("3 have no completed human conversation" in c.value for c in at.caption)
