"""Importing the released RecLLMSim data: the whole dataset, a small copied fixture with malformed
files, re-import idempotence, --strict leaving the database untouched, both database engines."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, inspect
from sqlmodel import Session, SQLModel, select

from db.errors import UserInputError
from db.models import (
    Condition,
    Conversation,
    Label,
    LabelSource,
    Participant,
    Profile,
    QuestionnaireResponse,
    TaskContext,
    Turn,
)
from workbench.dataio.recllmsim import import_recllmsim


def table_counts(engine) -> dict[str, int]:
    names = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.connect() as conn:
        return {
            t: conn.execute(select(func.count()).select_from(SQLModel.metadata.tables[t])).scalar_one()
            for t in names
            if t in SQLModel.metadata.tables
        }


# A few real files of every wave, including anomalies (ends on a user turn, starts with an assistant turn).
def _pick(root: Path) -> list[Path]:
    picks = []
    agent = sorted((root / "LLM_agent_user").rglob("*.json"))
    picks += [p for p in agent if "new travel planning" in p.as_posix()][:1]
    picks += [p for p in agent if "preparing gifts" in p.as_posix()][:2]
    starts_assistant = [
        p for p in agent if json.loads(p.read_text("utf-8"))["history"][0]["role"] == "assistant"
    ]
    picks += starts_assistant[:1]
    v1 = sorted((root / "real_human_user").rglob("*.json"))
    picks += v1[:2]
    v2 = sorted((root / "human_exp_V2").rglob("*.json"))
    picks += v2[:3]
    ends_user = [p for p in v2 if json.loads(p.read_text("utf-8"))["history"][-1]["role"] == "user"]
    picks += ends_user[:1]
    gold = [p for p in v2[:400] if "strategy_human_V1" in json.loads(p.read_text("utf-8"))]
    picks += gold[:1]
    return list(dict.fromkeys(picks))


@pytest.fixture
def tiny(recllmsim, tmp_path) -> Path:
    """~10 real files copied into the released layout."""
    root = tmp_path / "recllmsim-tiny"
    for p in _pick(recllmsim):
        dest = root / p.relative_to(recllmsim)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    return root


def _add_malformed(root: Path) -> dict[str, str]:
    bad = {
        "LLM_agent_user/travel planning/9001.json": "{not json",
        "LLM_agent_user/travel planning/9002.json": json.dumps(
            {"task": "travel planning", "preference_id": 1}
        ),
        "human_exp_V2/User_900/旅行规划/1.json": json.dumps(
            {
                "history": [
                    {"role": "user", "content": "你好"},
                    {"role": "assistant", "content": "你好！", "hallucination": "也许"},
                ],
                "profile": {"gender": "Male"},
                "task_context": "x",
                "task_type": "旅行规划",
            },
            ensure_ascii=False,
        ),
        "human_exp_V2/User_901/未知场景/1.json": json.dumps(
            {"history": [{"role": "user", "content": "hi"}], "profile": {}, "task_context": "x"}
        ),
    }
    for rel, text in bad.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return bad


def test_whole_dataset(recllmsim, sqlite_engine):
    rep = import_recllmsim(sqlite_engine, recllmsim, study="recllmsim")
    assert rep.files == 3980 and rep.imported == 3980 and rep.skipped == 0
    assert rep.conversations_by_kind == Counter(agent=1856, human=2124)
    with Session(sqlite_engine) as s:
        waves = dict(s.exec(select(Conversation.wave, func.count()).group_by(Conversation.wave)).all())
        assert waves == {"agent": 1657, "agent_new_travel": 199, "human_v1": 291, "human_v2": 1833}
        assert s.exec(select(func.count(Participant.id))).one() == 146
        assert dict(
            s.exec(
                select(Participant.external_source, func.count()).group_by(Participant.external_source)
            ).all()
        ) == {"recllmsim-v1": 31, "recllmsim-v2": 115}
        # every turn, with the anomalies kept: 16 end on a user turn, 7 start with an assistant turn
        assert s.exec(select(func.count(Turn.id))).one() == 33141
        convs = s.exec(select(Conversation)).all()
        anomalies = Counter(a for c in convs for a in c.meta["anomalies"])
        assert anomalies["ends_on_user_turn"] == 16 and anomalies["starts_with_assistant"] == 7
        # human live judgements
        hall = dict(
            s.exec(
                select(Turn.hallucination, func.count())
                .where(Turn.hallucination.is_not(None))
                .group_by(Turn.hallucination)
            ).all()
        )
        assert hall == {"no": 1197 + 7545, "yes": 69 + 221, "cant_tell": 69 + 294}
        assert s.exec(select(func.count(Turn.id)).where(Turn.satisfaction.is_not(None))).one() == 8060
        assert s.exec(select(func.count(Turn.id)).where(Turn.satisfaction_reason.is_not(None))).one() == 1261
        assert s.exec(select(func.count(Turn.id)).where(Turn.translation_language == "zh")).one() == 14199
        # labels by source
        by_src = dict(
            s.exec(
                select(LabelSource.name, func.count(Label.id)).join(Label).group_by(LabelSource.name)
            ).all()
        )
        assert by_src == {
            "imported:recllmsim-gpt4o": 3980 * 11,
            "imported:recllmsim-human": 200 * 11,
            "imported:recllmsim-hallucination-annotators": 7103,
        }
        gold_convs = s.exec(
            select(func.count(func.distinct(Label.conversation_id)))
            .join(LabelSource)
            .where(LabelSource.name == "imported:recllmsim-human")
        ).one()
        assert gold_convs == 200
        yes = s.exec(
            select(func.count(Label.id)).where(Label.dimension == "hallucination", Label.value == "yes")
        ).one()
        assert yes == 7103 - 6758 - 306
        lab = s.exec(
            select(Label)
            .join(LabelSource)
            .where(LabelSource.name == "imported:recllmsim-gpt4o", Label.dimension == "question_broadness")
        ).first()
        assert len(lab.samples) == 3 and lab.value in {"1", "2", "3", "4", "5"}
        assert lab.flagged == (len(set(lab.samples)) > 1)
        src = s.exec(select(LabelSource).where(LabelSource.name == "imported:recllmsim-gpt4o")).one()
        assert (
            src.kind == "imported"
            and src.model == "openai/gpt-4o-2024-08-06"
            and src.params["labeller"] == "llm"
        )

        # questionnaires, normalised, with the Chinese option kept
        def availability(kind):
            return dict(
                s.exec(
                    select(QuestionnaireResponse.value, func.count())
                    .join(Conversation, Conversation.id == QuestionnaireResponse.conversation_id)
                    .where(
                        QuestionnaireResponse.questionnaire == "post_task",
                        QuestionnaireResponse.item == "Availability",
                        Conversation.user_kind == kind,
                    )
                    .group_by(QuestionnaireResponse.value)
                ).all()
            )

        assert availability("human") == {"very_useful": 1256, "somewhat": 830, "unusable": 38}
        # the agents' self-reported utility (0-2) answers the same item: 1850 twos and 6 ones
        assert availability("agent") == {"very_useful": 1850, "somewhat": 6}
        assert (
            s.exec(
                select(func.count(QuestionnaireResponse.id)).where(
                    QuestionnaireResponse.questionnaire == "agent_rating"
                )
            ).one()
            == 1856 * 7
        )
        assert (
            s.exec(
                select(func.count(QuestionnaireResponse.id)).where(
                    QuestionnaireResponse.questionnaire == "agent_self_report"
                )
            ).one()
            == 1856 * 3
        )
        mapped = s.exec(
            select(func.count(QuestionnaireResponse.id))
            .join(Conversation, Conversation.id == QuestionnaireResponse.conversation_id)
            .where(QuestionnaireResponse.questionnaire == "post_task", Conversation.user_kind == "agent")
        ).one()
        assert mapped == 1856 * 3  # Detail, Availability, Diversity; no self-report of Memorization
        # pool profiles keyed by preference_id; one profile per participant (two users changed theirs)
        assert s.exec(select(func.count(Profile.id)).where(Profile.key.like("pool-%"))).one() == 100
        assert s.exec(select(func.count(Profile.id)).where(Profile.key.like("participant-%"))).one() == 148
        p75 = s.exec(select(Profile).where(Profile.key == "pool-75")).one()
        assert p75.text.startswith("1. Gender: Female") and "zh" in p75.translations
        # every conversation sits in a condition of its language
        mism = s.exec(
            select(func.count(Conversation.id))
            .join(Condition, Condition.id == Conversation.condition_id)
            .where(Condition.language != Conversation.language)
        ).one()
        assert mism == 0

    before = table_counts(sqlite_engine)
    again = import_recllmsim(sqlite_engine, recllmsim, study="recllmsim")
    assert again.imported == 0 and again.existing == 3980
    assert table_counts(sqlite_engine) == before


def test_tiny_fixture_with_malformed_files(tiny, sqlite_engine):
    n_good = len(list(tiny.rglob("*.json")))
    bad = _add_malformed(tiny)
    rep = import_recllmsim(sqlite_engine, tiny, study="tiny")
    assert rep.imported == n_good and rep.skipped == len(bad)
    reasons = dict(rep.malformed)
    assert set(reasons) == set(bad)
    assert "invalid JSON" in reasons["LLM_agent_user/travel planning/9001.json"]
    assert "history" in reasons["LLM_agent_user/travel planning/9002.json"]
    assert "hallucination" in reasons["human_exp_V2/User_900/旅行规划/1.json"]
    assert "scenario" in reasons["human_exp_V2/User_901/未知场景/1.json"]
    assert "malformed: LLM_agent_user/travel planning/9001.json" in rep.summary()
    with Session(sqlite_engine) as s:
        convs = s.exec(select(Conversation)).all()
        assert {c.external_id for c in convs}.isdisjoint(bad)
        kinds = Counter(c.user_kind for c in convs)
        assert kinds["agent"] >= 4 and kinds["human"] >= 6
        assert {c.wave for c in convs} >= {"agent", "agent_new_travel", "human_v1", "human_v2"}
        # every imported conversation has all its turns
        for c in convs:
            n = s.exec(select(func.count(Turn.id)).where(Turn.conversation_id == c.id)).one()
            assert n == len(json.loads((tiny / c.external_id).read_text("utf-8"))["history"])


def test_strict_leaves_database_identical(tiny, sqlite_engine):
    import_recllmsim(sqlite_engine, tiny, study="tiny")
    before = table_counts(sqlite_engine)
    # new good files plus one malformed: nothing at all may be written
    extra = tiny / "LLM_agent_user" / "recipe planning"
    extra.mkdir(parents=True, exist_ok=True)
    src = next(p for p in (tiny / "LLM_agent_user").rglob("*.json"))
    shutil.copy(src, extra / "777.json")
    _add_malformed(tiny)
    with pytest.raises(UserInputError, match="Nothing was imported"):
        import_recllmsim(sqlite_engine, tiny, study="tiny", strict=True)
    assert table_counts(sqlite_engine) == before
    with pytest.raises(UserInputError, match="Nothing was imported"):
        import_recllmsim(sqlite_engine, tiny, study="other", strict=True)
    assert table_counts(sqlite_engine) == before


def test_strict_rolls_back_on_database_error(tiny, sqlite_engine, monkeypatch):
    import_recllmsim(sqlite_engine, tiny, study="tiny")
    before = table_counts(sqlite_engine)
    import workbench.dataio.writer as writer

    monkeypatch.setattr(writer, "CHUNK", 2)  # several chunks: the failure comes after some were written
    calls = {"n": 0}
    real = writer._write_chunk

    def failing(session, study, chunk, report):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(session, study, chunk, report)

    monkeypatch.setattr(writer, "_write_chunk", failing)
    with pytest.raises(RuntimeError):
        import_recllmsim(sqlite_engine, tiny, study="second", strict=True)
    assert table_counts(sqlite_engine) == before


def test_not_a_dataset(tmp_path, sqlite_engine):
    with pytest.raises(UserInputError, match="RecLLMSim"):
        import_recllmsim(sqlite_engine, tmp_path, study="x")
    with pytest.raises(UserInputError, match="not a directory"):
        import_recllmsim(sqlite_engine, tmp_path / "missing", study="x")


def test_small_import_both_engines(tiny, engine):
    rep = import_recllmsim(engine, tiny, study="tiny")
    assert rep.imported == len(list(tiny.rglob("*.json")))
    before = table_counts(engine)
    assert import_recllmsim(engine, tiny, study="tiny").imported == 0
    assert table_counts(engine) == before
    with Session(engine) as s:
        ctx_sources = set(s.exec(select(TaskContext.source)).all())
        assert ctx_sources <= {"imported", "pack"}
        turn = s.exec(select(Turn).where(Turn.satisfaction.is_not(None))).first()
        assert (
            turn is not None
            and 1 <= turn.satisfaction <= 5
            and turn.hallucination in {"yes", "no", "cant_tell"}
        )
        pseudos = s.exec(select(Participant.pseudonym, Participant.external_id)).all()
        assert all(p != e and not p.startswith("User_") for p, e in pseudos)


def test_not_utf8_file_stops_the_import(tiny, sqlite_engine):
    """A GBK-encoded file used to be skipped as "not UTF-8 text" with no position: now the import
    stops with one line naming the file and the byte offset, and nothing is written."""
    bad = tiny / "human_exp_V2" / "User_902" / "旅行规划" / "1.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'{"history": "' + "旅行".encode("gbk") + b'"}')
    before = table_counts(sqlite_engine)
    with pytest.raises(UserInputError, match=r"1\.json: not UTF-8 text .* at byte offset 13"):
        import_recllmsim(sqlite_engine, tiny, study="tiny")
    assert table_counts(sqlite_engine) == before


def test_overlong_turn_is_malformed(tiny, sqlite_engine):
    rep = import_recllmsim(sqlite_engine, tiny, study="tiny", max_turn_chars=20)
    assert rep.imported == 0 and all("WORKBENCH_MAX_TURN_CHARS" in r for _, r in rep.malformed)


def test_agent_self_reports_answer_the_participants_post_task_items(tiny, sqlite_engine):
    """The agents' self-report (detail / utility / diversity, 0-2) is mapped onto the post-task items
    people answer (Detail / Availability / Diversity), marked as the simulator's; the originals stay,
    and the annotators' ratings of the agents are not taken for the user's answers."""
    import_recllmsim(sqlite_engine, tiny, study="tiny")
    with Session(sqlite_engine) as s:
        agents = s.exec(select(Conversation).where(Conversation.user_kind == "agent")).all()
        assert agents
        for conv in agents:
            rows = s.exec(
                select(QuestionnaireResponse).where(QuestionnaireResponse.conversation_id == conv.id)
            ).all()
            own = {r.item: r for r in rows if r.questionnaire == "agent_self_report"}
            post = {r.item: r for r in rows if r.questionnaire == "post_task"}
            assert (
                set(own) == {"detail", "utility", "diversity"}
                and len([r for r in rows if r.questionnaire == "agent_rating"]) == 7
            )
            assert set(post) == {"Detail", "Availability", "Diversity"}
            for src, item, scale in [
                ("detail", "Detail", ["brief", "average", "detailed"]),
                ("utility", "Availability", ["unusable", "somewhat", "very_useful"]),
                ("diversity", "Diversity", ["single", "average", "diverse"]),
            ]:
                raw = json.loads(post[item].raw_value)
                assert raw == {
                    "by": "simulator",
                    "source": "agent_self_report",
                    "item": src,
                    "answer": int(own[src].value),
                }
                assert post[item].value == scale[int(own[src].value)] and post[item].participant_id is None
