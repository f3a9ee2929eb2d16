"""The simulated user answers the participants' instruments (issue 18, section 1): per-reply rating
and post-task questionnaire in calls of their own (``user-rating@1``), stored where the participants'
answers are and marked as the simulator's, never changing how the conversation goes on; off with
``ratings=False`` / ``--no-ratings``; counted by the dry run; a malformed answer leaves the fields
empty and is recorded as the call's error. Through the real openai SDK against the fake server."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import Conversation, LLMCall, QuestionnaireResponse, SimulationRun, Turn
from tests.cli_helpers import run_cli
from workbench.participation.questionnaires import load_questionnaires
from workbench.simulation import SimulationSpec, plan_simulation, run_simulation
from workbench.simulation.rating import (
    Rater,
    load_rating_template,
    parse_post_task,
    parse_reply_rating,
    rated_items,
)
from workbench.simulation.user import UserContext
from workbench.studies import create_study
from workbench.testing.fake_llm_server import FakeLLMServer, FakeRequest

FAST = {"max_retries": 0, "backoff_base": 0.01, "backoff_max": 0.02, "timeout": 5}
GOOD_RATING = {"hallucination": "cant_tell", "satisfaction": 3, "reason": "too vague"}
GOOD_POST = {"Memorization": "no", "Detail": "Brief", "Availability": "somewhat", "Diversity": "single"}


def responder(turns: int = 2, rating=GOOD_RATING, post=GOOD_POST):
    """The simulated user ends after ``turns`` replies; its ratings are ``rating`` / ``post`` (a dict
    is sent as JSON, a string as it is); the assistant numbers its answers."""

    def fn(req: FakeRequest) -> str:
        msgs = req.messages
        if "study questionnaire" in msgs[0]["content"]:
            answer = rating if "hallucination" in msgs[-1]["content"] else post
            return answer if isinstance(answer, str) else json.dumps(answer)
        if "role-playing" in msgs[0]["content"]:
            seen = sum(1 for m in msgs[2:] if m["role"] == "user")
            return json.dumps({"message": f"question {seen}", "end": seen >= turns})
        return f"answer {sum(1 for m in msgs if m['role'] == 'user')}"

    return fn


def _study(engine, name="s"):
    with Session(engine) as s:
        _st, n = create_study(
            s,
            name,
            "openai/fake-assistant",
            scenarios=["travel_planning"],
            profiles=1,
            language="en",
            system_prompt="You are a travel assistant.",
        )
        s.commit()
    return n


def _spec(**kw):
    return SimulationSpec(**{"study": "s", "simulator_model": "openai/fake-sim", "cache": False, **kw})


def _calls(s, purpose, run_id=None):
    q = select(LLMCall).where(LLMCall.purpose == purpose)
    if run_id is not None:
        q = q.where(LLMCall.run_id == run_id)
    return s.exec(q.order_by(LLMCall.id)).all()


# ---------------------------------------------------------------------------------------------------
# Parsing and prompts
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"hallucination": "no", "satisfaction": 5, "reason": "great"}', ("no", 5, "great")),
        (
            'Sure!\n```json\n{"hallucination": "Can\'t tell", "satisfaction": "4"}\n```',
            ("cant_tell", 4, None),
        ),
        ('{"hallucination": true, "satisfaction": 2.0, "reason": " "}', ("yes", 2, None)),
        ('{"hallucination": "否", "satisfaction": "3/5"}', ("no", 3, None)),
    ],
)
def test_reply_rating_is_read_robustly(text, expected):
    r = parse_reply_rating(text)
    assert (r.hallucination, r.satisfaction, r.reason) == expected and r.error is None


@pytest.mark.parametrize(
    "text,words",
    [
        ("I'd rather not rate this.", "no JSON object"),
        ('["no", 4]', "not a JSON object"),
        ('{"hallucination": "maybe", "satisfaction": 4}', "hallucination 'maybe'"),
        ('{"hallucination": "no", "satisfaction": 7}', "satisfaction 7"),
        ('{"hallucination": "no"}', "satisfaction None"),
    ],
)
def test_malformed_or_refused_rating_gives_an_error_and_no_values(text, words):
    r = parse_reply_rating(text)
    assert words in r.error
    assert (r.hallucination, r.satisfaction, r.reason) == (None, None, None)


def test_post_task_answers_are_checked_like_a_participants():
    items = rated_items(load_questionnaires().items("post_task"))
    assert [it.name for it in items] == ["Memorization", "Detail", "Availability", "Diversity", "free_text"]
    out = parse_post_task(
        json.dumps({"Memorization": "否", "Detail": "Brief", "Availability": "nonsense", "free_text": ""}),
        items,
        "zh",
    )
    got = {a.item: (a.questionnaire, a.value, a.raw_value) for a in out.answers}
    # options given as their text (either language) are stored as the option's value
    assert got == {"Memorization": ("post_task", "no", "否"), "Detail": ("post_task", "brief", "简略")}
    assert "Availability: 'nonsense'" in out.error and "Diversity: missing" in out.error
    assert "free_text" not in out.error  # optional
    assert parse_post_task("no idea", items, "en").answers == []


def test_rating_prompts_hold_persona_task_and_conversation_but_no_anchor():
    ctx = UserContext(task="Plan a trip to Rome", profile="A retired teacher", language="en")
    rater = Rater(load_rating_template(), ctx, load_questionnaires().items("post_task"))
    assert rater.label == "user-rating@1"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Rome is lovely."}]
    system, ask = rater.reply_messages(turns)
    assert "A retired teacher" in system["content"] and "Plan a trip to Rome" in system["content"]
    assert "You: hi" in ask["content"] and "Assistant: Rome is lovely." in ask["content"]
    assert "made-up or false information" in ask["content"]  # the participants' question
    _, post = rater.post_task_messages(turns)
    body = post["content"]
    assert "Availability: How useful were the answers in practice?" in body
    assert "color" not in body  # the attention check is not asked
    assert '"Availability": "..."' in body  # the example anchors on no option
    zh = Rater(load_rating_template(), UserContext(task="t", profile=None, language="zh"), [])
    assert "你: hi" in zh.reply_messages(turns)[1]["content"] and zh.post_task_messages(turns) is None


# ---------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------


def test_ratings_are_stored_where_participants_answers_are_and_marked(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    n = _study(engine)
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        summary = run_simulation(engine, _spec())
    assert summary.completed == n and summary.failed_calls == 0
    with Session(engine) as s:
        run = s.exec(select(SimulationRun)).one()
        assert run.params["ratings"] == "user-rating@1"
        rating_calls = {c.id: c for c in _calls(s, "simulator_rating")}
        assert {c.prompt_version for c in rating_calls.values()} == {"user-rating@1"}
        assert all(c.error is None and c.run_id == run.id for c in rating_calls.values())
        for conv in s.exec(select(Conversation)).all():
            turns = s.exec(select(Turn).where(Turn.conversation_id == conv.id).order_by(Turn.index)).all()
            replies = [t for t in turns if t.role == "assistant"]
            assert len(replies) == 2
            for t in replies:
                assert (t.hallucination, t.satisfaction, t.satisfaction_reason) == (
                    "cant_tell",
                    3,
                    "too vague",
                )
                assert t.meta["rated_by"] == "simulator" and t.meta["rating_prompt"] == "user-rating@1"
                call = rating_calls[t.meta["rating_call_id"]]
                assert call.conversation_id == conv.id and call.response == json.dumps(GOOD_RATING)
                # the rating saw the reply it rates, and the reply is the last thing it saw
                assert (
                    call.messages[-1]["content"].split("About the assistant")[0].strip().endswith(t.content)
                )
            assert all(t.hallucination is None and t.satisfaction is None for t in turns if t.role == "user")
            answers = s.exec(
                select(QuestionnaireResponse).where(QuestionnaireResponse.conversation_id == conv.id)
            ).all()
            assert {(a.questionnaire, a.item, a.value) for a in answers} == {
                ("post_task", "Memorization", "no"),
                ("post_task", "Detail", "brief"),
                ("post_task", "Availability", "somewhat"),
                ("post_task", "Diversity", "single"),
            }
            for a in answers:
                raw = json.loads(a.raw_value)
                assert a.participant_id is None and a.study_id == conv.study_id and a.question
                assert raw["by"] == "simulator" and raw["prompt"] == "user-rating@1"
                assert rating_calls[raw["llm_call_id"]].conversation_id == conv.id
        # per conversation: one rating call per reply and one post-task call
        assert len(rating_calls) == 3 * n


def _simulator_prompts(engine, run_key_prefix=None) -> dict:
    """Per (condition, replicate): the messages of every call the simulated user's turns came from."""
    out = defaultdict(list)
    with Session(engine) as s:
        for run in s.exec(select(SimulationRun)).all():
            for conv in s.exec(select(Conversation).where(Conversation.run_id == run.id)).all():
                calls = s.exec(
                    select(LLMCall)
                    .where(
                        LLMCall.conversation_id == conv.id, LLMCall.purpose.in_(["simulator", "assistant"])
                    )
                    .order_by(LLMCall.id)
                ).all()
                key = (run.params.get("ratings"), conv.condition_id, conv.replicate)
                out[key] = [(c.purpose, c.messages, c.response) for c in calls]
    return out


def test_ratings_never_change_how_the_simulated_user_goes_on(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    _study(engine)
    with FakeLLMServer(responder=responder(3)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        on = run_simulation(engine, _spec())
        off = run_simulation(engine, _spec(ratings=False))
    assert on.run_key != off.run_key  # ratings are part of the run's identity
    prompts = _simulator_prompts(engine)
    with_ratings = {k[1:]: v for k, v in prompts.items() if k[0] == "user-rating@1"}
    without = {k[1:]: v for k, v in prompts.items() if k[0] is None}
    assert with_ratings and with_ratings.keys() == without.keys()
    for key, calls in with_ratings.items():
        # the simulator's and the assistant's prompts (and so the next user turns) are identical
        assert calls == without[key]
        assert not any("study questionnaire" in json.dumps(m) for _p, m, _r in calls)
    with Session(engine) as s:
        run_off = s.exec(select(SimulationRun).where(SimulationRun.key == off.run_key)).one()
        assert run_off.params["ratings"] is None and not _calls(s, "simulator_rating", run_off.id)
        convs = s.exec(select(Conversation.id).where(Conversation.run_id == run_off.id)).all()
        turns = s.exec(select(Turn).where(Turn.conversation_id.in_(convs))).all()
        assert all(t.satisfaction is None and "rated_by" not in t.meta for t in turns)
        assert not s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.conversation_id.in_(convs))
        ).all()


def test_a_malformed_rating_leaves_the_fields_empty_and_is_the_calls_error(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    n = _study(engine)
    with FakeLLMServer(responder=responder(2, rating="I won't rate that.", post='{"Detail": "huge"}')) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        summary = run_simulation(engine, _spec())
    assert summary.completed == n and summary.failed == 0  # the conversations go on
    with Session(engine) as s:
        replies = s.exec(select(Turn).where(Turn.role == "assistant")).all()
        assert len(replies) == 2 * n
        for t in replies:
            assert (t.hallucination, t.satisfaction, t.satisfaction_reason) == (None, None, None)
            assert "no JSON object" in t.meta["rating_error"]
            call = s.get(LLMCall, t.meta["rating_call_id"])
            assert call.error.startswith("rating: no JSON object") and call.response == "I won't rate that."
        assert not s.exec(select(QuestionnaireResponse)).all()
        post_calls = [
            c for c in _calls(s, "simulator_rating") if "questions about the task" in json.dumps(c.messages)
        ]
        assert len(post_calls) == n
        assert all("Detail: 'huge'" in c.error and "Memorization: missing" in c.error for c in post_calls)


def test_a_failed_rating_call_is_recorded_and_the_conversation_goes_on(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    n = _study(engine)
    good = responder(2)

    def fn(req: FakeRequest) -> str:
        if "study questionnaire" in req.messages[0]["content"]:
            raise RuntimeError("rating broke")
        return good(req)

    with FakeLLMServer(responder=fn) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        summary = run_simulation(engine, _spec(), model_options={"openai/fake-sim": FAST})
    assert summary.completed == n and summary.failed == 0
    with Session(engine) as s:
        for t in s.exec(select(Turn).where(Turn.role == "assistant")).all():
            assert t.satisfaction is None and t.meta["rating_error"] and "rating_call_id" not in t.meta
        failed = _calls(s, "simulator_rating")
        assert len(failed) >= 3 * n and all(c.error for c in failed)
        assert not s.exec(select(QuestionnaireResponse)).all()


def test_a_restarted_conversation_does_not_answer_twice(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    n = _study(engine)
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        run_simulation(engine, _spec())
        with Session(engine) as s:
            conv_id = s.exec(select(Conversation.id).order_by(Conversation.id)).first()
            # as a killed run leaves it: in progress, its answers written
            s.exec(update(Conversation).where(Conversation.id == conv_id).values(status="in_progress"))
            s.commit()
        again = run_simulation(engine, _spec())
    assert again.completed == n and again.skipped == n - 1
    with Session(engine) as s:
        answers = s.exec(
            select(QuestionnaireResponse.item).where(QuestionnaireResponse.conversation_id == conv_id)
        ).all()
        assert sorted(answers) == ["Availability", "Detail", "Diversity", "Memorization"]
        replies = s.exec(select(Turn).where(Turn.conversation_id == conv_id, Turn.role == "assistant")).all()
        live = {c.id for c in _calls(s, "simulator_rating") if (c.params or {}).get("attempt") != "abandoned"}
        assert len(replies) == 2 and all(t.meta["rating_call_id"] in live for t in replies)


def test_dry_run_counts_the_rating_calls(sqlite_engine, tmp_path):
    engine = sqlite_engine
    n = _study(engine)
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  openai/fake-sim: {input: 1.0, output: 2.0}\n  openai/fake-assistant: {input: 1.0, output: 2.0}\n"
    )
    kw = dict(min_turns=2, max_turns=4, prices_file=str(prices))
    on = plan_simulation(engine, _spec(**kw))
    off = plan_simulation(engine, _spec(**kw, ratings=False))
    assert on.cost_usd > off.cost_usd > 0 and on.cost_usd_max > off.cost_usd_max
    assert on.run_key != off.run_key
    # expected turns 3: three replies rated and one post-task questionnaire per conversation
    assert on.rating_calls == 4 * n and off.rating_calls == 0
    assert on.calls == off.calls + on.rating_calls
    assert on.calls_max == off.calls_max + 5 * n
    assert on.prompt_tokens > off.prompt_tokens and on.completion_tokens > off.completion_tokens
    assert "of them the simulated user's ratings" in on.lines()[1]
    assert "ratings" not in off.lines()[1]


def test_cli_no_ratings(sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    eng = make_engine(sqlite_url)
    upgrade(eng)
    _study(eng)
    code, out, err = run_cli(
        ["simulate", "--study", "s", "--simulator-model", "openai/fake-sim", "--dry-run"], capsys
    )
    assert code == 0 and "the simulated user's ratings (--no-ratings skips them)" in out, (out, err)
    code, out, err = run_cli(
        ["simulate", "--study", "s", "--simulator-model", "openai/fake-sim", "--dry-run", "--no-ratings"],
        capsys,
    )
    assert code == 0 and "ratings" not in out, (out, err)
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        code, out, err = run_cli(
            ["simulate", "--study", "s", "--simulator-model", "openai/fake-sim", "--no-ratings"], capsys
        )
    assert code == 0, (out, err)
    with Session(eng) as s:
        assert s.exec(select(LLMCall)).all() and not _calls(s, "simulator_rating")
        assert not s.exec(select(QuestionnaireResponse)).all()
        assert s.exec(select(SimulationRun)).one().params["ratings"] is None
    eng.dispose()
