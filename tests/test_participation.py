"""The participant flow core: entry, assignment, chat, ratings, questionnaires, idle expiry."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from db.errors import NotFoundError, UserInputError
from db.models import (
    Assignment,
    Condition,
    Conversation,
    LLMCall,
    Participant,
    Profile,
    QuestionnaireResponse,
    Study,
    Turn,
)
from db.types import utcnow
from tests.participation_helpers import POST_TASK, make_study, profile_answers
from workbench import participation as P
from workbench.llm import LLMError, ScriptedModel
from workbench.participation.assignment import latin_square_order


def scripted(replies=None):
    model = ScriptedModel(replies)
    return lambda engine, cfg, study_id, conv_id: model


def drain(engine, pid, factory):
    return "".join(P.stream_reply(engine, pid, factory))


def test_latin_square_is_balanced():
    for k in (2, 3, 4, 5):
        rows = [latin_square_order(k, r) for r in range(k if k % 2 == 0 else 2 * k)]
        for row in rows:
            assert sorted(row) == list(range(k))
        # every condition appears equally often at every position
        for pos in range(k):
            counts = Counter(row[pos] for row in rows)
            assert len(set(counts.values())) == 1 and len(counts) == k
        # Williams: every ordered pair (a followed by b) equally often
        pairs = Counter((row[i], row[i + 1]) for row in rows for i in range(k - 1))
        assert len(pairs) == k * (k - 1) and len(set(pairs.values())) == 1


def test_invite_tokens_are_hashed_and_unique(session):
    make_study(session)
    tokens = P.create_invites(session, "pilot", 3)
    session.commit()
    assert len(set(tokens)) == 3 and all(len(t) >= 30 for t in tokens)
    stored = session.exec(select(Participant.invite_token_hash)).all()
    assert set(stored) == {P.hash_token(t) for t in tokens}
    assert not set(stored) & set(tokens)
    assert P.participant_for_token(session, tokens[1]).invite_token_hash == P.hash_token(tokens[1])
    with pytest.raises(NotFoundError):
        P.participant_for_token(session, "guess")


def test_full_session_participant_mode(engine):
    with Session(engine) as s:
        make_study(s, settings={"tasks_per_participant": 2, "min_turns": 1, "max_turns": 2})
        [token] = P.create_invites(s, "pilot", 1)
        s.commit()
    factory = scripted(
        lambda msgs: f"Answer {sum(m['role'] == 'user' for m in msgs)} ![x](http://evil/x.png)"
    )
    with Session(engine) as s:
        p = P.open_participant(s, token)
        assert P.participant_view(s, p).step == "consent"
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        with pytest.raises(UserInputError) as err:
            P.submit_profile(s, p, {})
        # every unanswered required field at once, by the labels the participant reads
        from workbench.participation.flow import profile_fields

        required = [f["label"] for f in profile_fields(p.language) if f["required"]]
        assert len(required) > 1 and str(err.value) == "Please answer: " + ", ".join(required)
        P.submit_profile(s, p, profile_answers())
        s.commit()
        pid = p.id
    for task in range(2):
        with Session(engine) as s:
            p = s.get(Participant, pid)
            view = P.participant_view(s, p)
            assert view.step == "task" and view.task.position == task and view.task.can_send
            assert not view.task.can_finish
            P.send_message(s, p, "Hello <b>there</b>")
            s.commit()
        # the user's message is stored before the assistant is asked
        with Session(engine) as s:
            assert P.participant_view(s, s.get(Participant, pid)).task.pending_reply
        assert drain(engine, pid, factory).startswith("Answer 1")
        with Session(engine) as s:
            p = s.get(Participant, pid)
            view = P.participant_view(s, p)
            assert view.task.unrated_index == 1 and not view.task.can_send
            with pytest.raises(UserInputError):
                P.send_message(s, p, "next")
            P.rate_reply(s, p, 1, "cant_tell", 4, "ok")
            P.send_message(s, p, "second")
            s.commit()
        drain(engine, pid, factory)
        with Session(engine) as s:
            p = s.get(Participant, pid)
            P.rate_reply(s, p, 3, "no", 5)
            view = P.participant_view(s, p)
            assert view.task.at_max and not view.task.can_send and view.task.can_finish
            P.finish_task(s, p)
            view = P.participant_view(s, p)
            assert view.step == "post_task" and view.ask_attention == (task == 0)
            with pytest.raises(UserInputError) as err:
                P.submit_post_task(s, p, {"Memorization": "no"})
            # the open questions as worded on the page (and the attention item when it is asked)
            msg = str(err.value)
            assert msg.startswith("Please answer every question. Still open: “How detailed")
            assert "Detail" not in msg.replace("detailed", "") and "Memorization" not in msg
            assert ('choose "Blue"' in msg) == (task == 0)
            P.submit_post_task(s, p, POST_TASK, attention="blue" if task == 0 else None)
            s.commit()
    with Session(engine) as s:
        p = s.get(Participant, pid)
        view = P.participant_view(s, p)
        assert view.step == "done" and view.code == "COMPLETE" and p.status == "completed"
        convs = s.exec(select(Conversation).where(Conversation.participant_id == pid)).all()
        assert len(convs) == 2 and {c.status for c in convs} == {"completed"}
        assert {c.end_reason for c in convs} == {"max_turns"}
        # digital twins: the human's conditions carry the participant's own profile
        prof = s.get(Profile, p.profile_id)
        assert prof.source == "participant" and prof.fields["gender"] == profile_answers()["gender"]
        for c in convs:
            cond = s.get(Condition, c.condition_id)
            assert cond.profile_id == p.profile_id
        turns = s.exec(select(Turn).where(Turn.conversation_id == convs[0].id).order_by(Turn.index)).all()
        assert [t.role for t in turns] == ["user", "assistant"] * 2
        assert turns[0].content == "Hello <b>there</b>"
        assert turns[1].hallucination == "cant_tell" and turns[1].satisfaction == 4
        assert turns[1].satisfaction_reason == "ok" and turns[3].satisfaction_reason is None
        assert all(t.created_at and t.completed_at for t in turns)
        assert turns[1].created_at.tzinfo is not None and turns[1].latency_ms is not None
        assert (
            len(
                s.exec(
                    select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "post_task")
                ).all()
            )
            == 10
        )
        att = s.exec(
            select(QuestionnaireResponse).where(QuestionnaireResponse.questionnaire == "attention_check")
        ).all()
        assert [(a.value, a.raw_value) for a in att] == [("pass", "blue")]
        assert {a.status for a in s.exec(select(Assignment)).all()} == {"completed"}


def test_llm_error_keeps_message_and_retry_works(sqlite_engine):
    engine = sqlite_engine
    with Session(engine) as s:
        make_study(s, settings={"profile_mode": "assigned"}, with_profiles=True)
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)  # assigned mode: straight to the first task
        assert P.participant_view(s, p).task.profile_text.startswith("A person")
        P.send_message(s, p, "Plan my trip")
        s.commit()
        pid = p.id
    factory = scripted([LLMError("rate limited"), "Here is a plan."])
    with pytest.raises(P.ReplyError, match="rate limited"):
        drain(engine, pid, factory)
    with Session(engine) as s:
        view = P.participant_view(s, s.get(Participant, pid))
        assert [t.content for t in view.task.turns] == ["Plan my trip"] and view.task.pending_reply
    assert drain(engine, pid, factory) == "Here is a plan."
    with Session(engine) as s:
        view = P.participant_view(s, s.get(Participant, pid))
        assert [t.role for t in view.task.turns] == ["user", "assistant"] and not view.task.pending_reply


def test_recorded_assistant_writes_llm_calls(sqlite_engine):
    from workbench.llm import recorded

    engine = sqlite_engine
    with Session(engine) as s:
        make_study(s)
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        P.submit_profile(s, p, profile_answers())
        P.send_message(s, p, "hi")
        s.commit()
        pid = p.id
    model = ScriptedModel(["hello"])

    def factory(eng, cfg, study_id, conv_id):
        return recorded(
            model, eng, purpose="assistant", study_id=study_id, conversation_id=conv_id, cache=False
        )

    assert drain(engine, pid, factory) == "hello"
    with Session(engine) as s:
        call = s.exec(select(LLMCall)).one()
        turn = s.exec(select(Turn).where(Turn.role == "assistant")).one()
        assert call.purpose == "assistant" and call.conversation_id == turn.conversation_id
        assert turn.llm_call_id == call.id


def test_decline_gives_screenout_code(session):
    make_study(session, settings={"screenout_code": "NOPE"})
    [token] = P.create_invites(session, "pilot", 1)
    p = P.open_participant(session, token)
    P.give_consent(session, p, False)
    view = P.participant_view(session, p)
    assert view.step == "screened_out" and view.code == "NOPE" and p.status == "screened_out"
    with pytest.raises(UserInputError):
        P.give_consent(session, p, True)
    # the code a participant was shown stays theirs when the researcher changes the study's code
    study = session.exec(select(Study)).one()
    study.settings = {**study.settings, "screenout_code": "NEW"}
    session.add(study)
    session.flush()
    assert P.participant_view(session, p).code == "NOPE"
    [token2] = P.create_invites(session, "pilot", 1)
    p2 = P.open_participant(session, token2)
    P.give_consent(session, p2, False)
    assert P.participant_view(session, p2).code == "NEW"


def _enter(session, token):
    p = P.open_participant(session, token)
    P.give_consent(session, p, True)
    P.finish_instructions(session, p)
    P.submit_profile(session, p, profile_answers())
    return p


def test_assignment_balanced_with_quota_and_counterbalanced(session):
    study = make_study(
        session,
        scenarios=("travel_planning", "recipe_planning", "preparing_gifts"),
        contexts=1,
        settings={"tasks_per_participant": 2, "quota_per_condition": 4},
    )
    tokens = P.create_invites(session, "pilot", 7)
    firsts = []
    for t in tokens[:6]:
        p = _enter(session, t)
        rows = session.exec(
            select(Assignment).where(Assignment.participant_id == p.id).order_by(Assignment.position)
        ).all()
        assert len(rows) == 2
        conds = [session.get(Condition, a.condition_id) for a in rows]
        assert conds[0].scenario_id != conds[1].scenario_id  # different scenarios first
        firsts.append(conds[0].scenario_id)
    # 6 participants x 2 tasks over 3 units: exactly 4 each (balanced, quota reached)
    from workbench.participation.assignment import unit_loads

    loads = unit_loads(session, study.id, "participant")
    assert sorted(loads.values()) == [4, 4, 4]
    assert len(set(firsts)) > 1  # order counterbalanced
    p7 = _enter(session, tokens[6])
    assert P.participant_view(session, p7).step == "full"


def test_idle_session_abandoned_and_assignment_released(session):
    make_study(session, settings={"idle_timeout_minutes": 5})
    [token] = P.create_invites(session, "pilot", 1)
    p = _enter(session, token)
    P.send_message(session, p, "hi")
    p.last_seen_at = utcnow() - timedelta(minutes=6)
    session.add(p)
    session.flush()
    assert P.expire_idle(session) == 1
    assert p.status == "abandoned"
    assert {a.status for a in session.exec(select(Assignment)).all()} == {"released"}
    conv = session.exec(select(Conversation)).first()
    assert conv.status == "abandoned" and conv.end_reason == "idle"
    assert len(session.exec(select(Turn)).all()) == 1  # what was typed is kept
    assert P.participant_view(session, P.open_participant(session, token)).step == "expired"


def test_open_participant_expires_on_return(session):
    make_study(session, settings={"idle_timeout_minutes": 5})
    [token] = P.create_invites(session, "pilot", 1)
    p = _enter(session, token)
    p.last_seen_at = utcnow() - timedelta(minutes=10)
    assert P.open_participant(session, token).status == "abandoned"


def test_prolific_entry_resumes_and_keeps_external_id_apart(session):
    make_study(
        session,
        settings={
            "prolific_completion_url": "https://app.prolific.com/submissions/complete?cc=",
            "prolific_study_id": "STUDY1",
        },
    )
    p, tok1 = P.enter_prolific(session, "5f0a1b2c3d4e5f6a7b8c9d0e", "STUDY1", "SESS1", study_name="pilot")
    assert p.external_id == "5f0a1b2c3d4e5f6a7b8c9d0e" and p.pseudonym != p.external_id
    p2, tok2 = P.enter_prolific(session, "5f0a1b2c3d4e5f6a7b8c9d0e", "STUDY1", "SESS1", study_name="pilot")
    assert p2.id == p.id and tok1 != tok2
    # a second tab (the link opened again) does not strand the first: both tokens open the session
    assert P.participant_for_token(session, tok1).id == P.participant_for_token(session, tok2).id == p.id
    with pytest.raises(NotFoundError):
        P.participant_for_token(session, f"{p.id}.forged-token-of-another-tab")
    with pytest.raises(UserInputError):
        P.enter_prolific(session, "5f0a1b2c3d4e5f6a7b8c9d0e", "STUDY1", "OTHER", study_name="pilot")
    with pytest.raises(UserInputError):
        P.enter_prolific(session, "<script>", "STUDY1", "S", study_name="pilot")
    p = P.open_participant(session, tok2)
    P.give_consent(session, p, False)
    assert (
        P.participant_view(session, p).redirect_url
        == "https://app.prolific.com/submissions/complete?cc=SCREENOUT"
    )


def test_idle_participants_released_before_new_assignment(session):
    make_study(
        session,
        scenarios=("travel_planning",),
        contexts=1,
        settings={"tasks_per_participant": 1, "quota_per_condition": 1, "idle_timeout_minutes": 5},
    )
    t1, t2 = P.create_invites(session, "pilot", 2)
    p1 = _enter(session, t1)
    p1.last_seen_at = utcnow() - timedelta(minutes=6)
    session.add(p1)
    session.flush()
    p2 = _enter(session, t2)  # the only slot was held by p1, who walked away
    assert P.participant_view(session, p2).step == "task" and p1.status == "abandoned"


def test_simultaneous_assignments_never_overshoot_a_quota(engine):
    """Participants who reach the task step at the same instant must not push a unit past its quota:
    assignment holds a per-study lock (a row lock on PostgreSQL, the write lock on SQLite)."""
    import threading

    import workbench.participation.assignment as A

    with Session(engine, expire_on_commit=False) as s:
        make_study(
            s,
            scenarios=("travel_planning", "recipe_planning"),
            contexts=1,
            settings={"tasks_per_participant": 1, "quota_per_condition": 2},
        )
        tokens = P.create_invites(s, "pilot", 8)
        for t in tokens:
            p = P.open_participant(s, t)
            P.give_consent(s, p, True)
            P.finish_instructions(s, p)
        s.commit()

    # Widen the window between reading the loads and writing the assignment, as a busy server would.
    real_loads = A.unit_loads
    barrier = threading.Barrier(len(tokens), timeout=30)

    def slow_loads(*a, **kw):
        out = real_loads(*a, **kw)
        threading.Event().wait(0.05)
        return out

    errors, steps = [], []

    def one(token):
        try:
            with Session(engine, expire_on_commit=False) as s:
                p = P.open_participant(s, token)
                s.commit()
                barrier.wait()
                P.submit_profile(s, p, profile_answers())
                s.commit()
                steps.append(P.participant_view(s, p).step)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    A.unit_loads = slow_loads
    try:
        threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    finally:
        A.unit_loads = real_loads
    assert not errors
    with Session(engine) as s:
        study_id = s.exec(select(Condition.study_id)).first()
        loads = A.unit_loads(s, study_id, "participant")
    assert sorted(loads.values()) == [2, 2]  # 2 units x quota 2; the other 4 participants are told it is full
    assert Counter(steps) == {"task": 4, "full": 4}


def _task_participant(session, settings=None, language=None):
    make_study(session, settings=settings or {})
    [token] = P.create_invites(session, "pilot", 1, language=language)
    return _enter_lang(session, token), token


def _enter_lang(session, token):
    p = P.open_participant(session, token)
    P.give_consent(session, p, True)
    P.finish_instructions(session, p)
    P.submit_profile(session, p, profile_answers(p.language))
    return p


def test_refusals_are_worded_in_the_participants_language(session):
    from workbench.participation.chat import MAX_MESSAGE_CHARS
    from workbench.participation.texts import ParticipantError

    p, _ = _task_participant(session, language="zh")
    with pytest.raises(ParticipantError) as err:
        P.send_message(session, p, "长" * (MAX_MESSAGE_CHARS + 1))
    # the length and the limit, in Chinese; the English wording is there for another page
    assert err.value.key == "msg_too_long" and str(err.value) == (
        f"你的消息有 {MAX_MESSAGE_CHARS + 1} 个字符，上限为 {MAX_MESSAGE_CHARS} 个。请缩短后重新发送。"
    )
    assert err.value.text("en").startswith(
        f"Your message has {MAX_MESSAGE_CHARS + 1} characters; the limit is"
    )
    assert not session.exec(select(Turn)).all()  # nothing stored for a refused message
    P.send_message(session, p, "你好")
    with pytest.raises(ParticipantError, match="助手还没有回复"):
        P.send_message(session, p, "第二条")
    drain_session_reply(session, p)
    for h, sat, expected in (
        (None, 3, "请说明这条回复是否包含编造的信息。"),
        ("no", None, "请选择 1 到 5 的满意度。"),
    ):
        with pytest.raises(ParticipantError) as err:
            P.rate_reply(session, p, 1, h, sat)
        assert str(err.value) == expected
    with pytest.raises(ParticipantError, match="请先评价"):
        P.send_message(session, p, "第二条")
    with pytest.raises(ParticipantError) as err:
        P.give_consent(session, p, True)
    assert str(err.value) == "这一步已经完成；页面显示的是你现在所在的步骤。"


def drain_session_reply(session, p):
    """Store a reply to the pending message inside the test's session (no second connection)."""
    session.add(
        Turn(
            conversation_id=session.exec(select(Turn.conversation_id)).first(),
            index=1,
            role="assistant",
            content="回复",
        )
    )
    session.flush()


def test_profile_refusals_in_chinese(session):
    from workbench.participation.flow import profile_fields

    make_study(session)
    [token] = P.create_invites(session, "pilot", 1, language="zh")
    p = P.open_participant(session, token)
    P.give_consent(session, p, True)
    P.finish_instructions(session, p)
    fields = profile_fields("zh")
    integer = next((f for f in fields if f["type"] == "integer"), None)
    choice = next(f for f in fields if f["type"] == "choice")
    answers = profile_answers("zh")
    with pytest.raises(UserInputError) as err:
        P.submit_profile(session, p, {**answers, choice["name"]: "not-an-option"})
    assert str(err.value) == f"请为以下问题选择一个选项：{choice['label']}"
    if integer is not None:
        with pytest.raises(UserInputError) as err:
            P.submit_profile(session, p, {**answers, integer["name"]: "abc"})
        assert str(err.value) == f"请为以下问题输入整数：{integer['label']}"
        # out of range: said in Chinese by the core (the page's number box has no min/max, whose
        # refusal the browser would word in English)
        assert integer["min"] is not None and integer["max"] is not None
        with pytest.raises(UserInputError) as err:
            P.submit_profile(session, p, {**answers, integer["name"]: integer["max"] + 400})
        assert str(err.value) == f"{integer['label']}：请输入 {integer['min']} 到 {integer['max']} 之间的数字"


def test_reply_failure_is_logged_and_recorded_not_shown(sqlite_engine, caplog):
    """The details of a failed reply go to the server log and the failed call's LLMCall row; the
    ReplyError keeps them for tests and logs, and pages show participants a fixed notice."""
    import logging

    from workbench.llm import recorded

    engine = sqlite_engine
    with Session(engine) as s:
        make_study(s, settings={"profile_mode": "assigned"}, with_profiles=True)
        [token] = P.create_invites(s, "pilot", 1)
        p = P.open_participant(s, token)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        P.send_message(s, p, "Plan my trip")
        s.commit()
        pid, pseudonym = p.id, p.pseudonym
    detail = "cannot reach http://127.0.0.1:8634/v1: Connection error."
    model = ScriptedModel([LLMError(detail)])

    def factory(eng, cfg, study_id, conv_id):
        return recorded(
            model, eng, purpose="assistant", study_id=study_id, conversation_id=conv_id, cache=False
        )

    with (
        caplog.at_level(logging.ERROR, logger="workbench"),
        pytest.raises(P.ReplyError, match="cannot reach"),
    ):
        drain(engine, pid, factory)
    [rec] = [r for r in caplog.records if r.name == "workbench.participation.chat"]
    assert (
        detail in rec.getMessage() and pseudonym in rec.getMessage() and "scripted/test" in rec.getMessage()
    )
    with Session(engine) as s:
        call = s.exec(select(LLMCall)).one()
        assert call.purpose == "assistant" and detail in call.error and call.conversation_id is not None
        # researchers see it on the Progress page
        from db.repo import assistant_failures_df
        from workbench.studies import assistant_model_problems

        failures = assistant_failures_df(s, call.study_id)
        assert assistant_model_problems(s, call.study_id) == []  # scripted/test needs no key
        assert failures[["conversation", "model"]].values.tolist() == [
            [call.conversation_id, "scripted/test"]
        ]
        assert detail in failures["error"].iloc[0]
    # a failure outside the LLM layer (no LLMCall row) is logged with its traceback
    caplog.clear()

    def broken(*a):
        raise RuntimeError("SDK bug")

    with (
        caplog.at_level(logging.ERROR, logger="workbench"),
        pytest.raises(P.ReplyError, match="RuntimeError: SDK bug"),
    ):
        drain(engine, pid, broken)
    [rec] = [r for r in caplog.records if r.name == "workbench.participation.chat"]
    assert rec.exc_info is not None


def test_expired_prolific_session_gets_the_return_route(session):
    url = "https://app.prolific.com/submissions/complete?cc="
    make_study(
        session,
        settings={
            "idle_timeout_minutes": 5,
            "prolific_completion_url": url,
            "screenout_code": "SO-1",
            "prolific_redirect_seconds": 5,
            "prolific_study_id": "STUDY1",
        },
    )
    p, token = P.enter_prolific(session, "pid1", "STUDY1", "SESS1", study_name="pilot")
    P.open_participant(session, token)
    P.give_consent(session, p, True)
    p.last_seen_at = utcnow() - timedelta(minutes=6)
    view = P.participant_view(session, P.open_participant(session, token))
    assert view.step == "expired" and view.prolific and view.code == "SO-1"
    assert view.redirect_url == url + "SO-1" and view.redirect_seconds == 0  # no automatic return


def test_progress_names_an_assistant_model_that_cannot_answer(session, monkeypatch):
    """A missing key fails before any call is recorded: the Progress page says so from the model
    check; imported studies (nobody takes part) are not checked."""
    from workbench.studies import assistant_model_problems

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    study = make_study(session, model="openai/gpt-4o-mini")
    [problem] = assistant_model_problems(session, study.id)
    assert "openai/gpt-4o-mini needs an API key" in problem
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert assistant_model_problems(session, study.id) == []
    monkeypatch.delenv("OPENAI_API_KEY")
    study.source = "imported"
    session.add(study)
    session.flush()
    assert assistant_model_problems(session, study.id) == []


def test_a_refused_message_is_kept_on_the_record_until_sent_or_discarded(session):
    from workbench.participation.chat import MAX_KEPT_CHARS, MAX_MESSAGE_CHARS
    from workbench.participation.texts import ParticipantError

    p, _ = _task_participant(session)
    long = "x" * (MAX_MESSAGE_CHARS + 1)
    with pytest.raises(ParticipantError) as err:
        P.send_message(session, p, long)
    P.keep_unsent(session, p, long, str(err.value))
    session.commit()
    view = P.participant_view(session, p)
    assert view.unsent == {"text": long, "error": str(err.value), "n": 1}
    P.send_message(session, p, "a new message from the chat box")  # not the kept one: it stays
    assert P.participant_view(session, p).unsent["text"] == long
    drain_session_reply(session, p)
    P.rate_reply(session, p, 1, "no", 4, "")
    P.send_message(session, p, "x" * 10, kept=True)  # the kept one, shortened
    assert P.participant_view(session, p).unsent is None
    P.keep_unsent(session, p, "y" * (MAX_KEPT_CHARS + 5), "too long")
    kept = P.participant_view(session, p).unsent
    assert kept["n"] == 1 and len(kept["text"]) == MAX_KEPT_CHARS
    P.discard_unsent(session, p)
    assert P.participant_view(session, p).unsent is None
    assert "unsent" not in p.state and p.state["step"] == "task"


def test_forged_prolific_links_enter_nothing(engine, caplog):
    """A Prolific entry is accepted only by the study naming its STUDY_ID; anything else gets the
    "link not valid" answer and creates no participant (issue 15, item 1)."""
    from db.models import Participant

    with Session(engine) as s:
        make_study(s, name="invite-only", settings={"quota_per_condition": 1})
        make_study(
            s, name="open", settings={"prolific_study_id": "REAL", "max_new_participants_per_minute": 3}
        )
        s.commit()
    forged = [
        ("pid-1", "y", "z", "invite-only"),  # an invite-only study by name
        ("pid-2", "FAKE", "z", "open"),  # the right name, a wrong STUDY_ID
        ("pid-3", "REAL", "z", "invite-only"),  # a real STUDY_ID, another study's name
        ("pid-4", "", "z", None),
    ]
    for pid, study_id, session_id, name in forged:
        with Session(engine) as s, pytest.raises(NotFoundError, match="not valid"):
            P.enter_prolific(s, pid, study_id, session_id, study_name=name)
    with Session(engine) as s:
        assert s.exec(select(Participant)).all() == []
    # a valid link works, with or without ?study=; a flood of new ids is turned away and logged
    for i in range(3):
        with Session(engine) as s:
            P.enter_prolific(s, f"pid-{i}", "REAL", "S", study_name="open" if i else None)
            s.commit()
    with Session(engine) as s, pytest.raises(UserInputError, match="wait a minute"):
        P.enter_prolific(s, "pid-flood", "REAL", "S")
    assert "turned away" in caplog.text
    with Session(engine) as s:  # a participant already in may still come back
        P.enter_prolific(s, "pid-0", "REAL", "S")
        assert len(s.exec(select(Participant)).all()) == 3
