"""Export formats, the JSONL round trip (export -> import jsonl into a fresh DB gives the same counts),
the CLI, and that exports hold no secrets."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pandas as pd
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from db.engine import make_engine
from db.errors import NotFoundError, UserInputError
from db.migrate import upgrade
from db.models import Conversation, Label, LabelSource, Participant, QuestionnaireResponse, Study, Turn
from tests.test_import_recllmsim import _pick
from workbench.cli import main as cli_main
from workbench.dataio.export import TABLES, export_study
from workbench.dataio.jsonl import import_jsonl
from workbench.dataio.recllmsim import import_recllmsim


@pytest.fixture
def subset(recllmsim, tmp_path):
    root = tmp_path / "subset"
    for p in _pick(recllmsim):
        dest = root / p.relative_to(recllmsim)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    return root


def _counts(engine, study: str) -> dict:
    with Session(engine) as s:

        def by_kind(model_count):
            return dict(
                s.exec(
                    select(Conversation.user_kind, func.count(model_count))
                    .join(Conversation, Conversation.id == model_count.class_.conversation_id)
                    .where(Conversation.study_id == sid)
                    .group_by(Conversation.user_kind)
                ).all()
            )

        from db.models import Study

        sid = s.exec(select(Study.id).where(Study.name == study)).one()
        convs = dict(
            s.exec(
                select(Conversation.user_kind, func.count(Conversation.id))
                .where(Conversation.study_id == sid)
                .group_by(Conversation.user_kind)
            ).all()
        )
        labels = dict(
            s.exec(
                select(LabelSource.name, func.count(Label.id))
                .join(Label)
                .join(Conversation, Conversation.id == Label.conversation_id)
                .where(Conversation.study_id == sid)
                .group_by(LabelSource.name)
            ).all()
        )
        answers = s.exec(
            select(func.count(QuestionnaireResponse.id)).where(QuestionnaireResponse.study_id == sid)
        ).one()
        return {
            "conversations": convs,
            "turns": by_kind(Turn.id),
            "labels": labels,
            "answers": answers,
            "participants": s.exec(
                select(func.count(Participant.id)).where(Participant.study_id == sid)
            ).one(),
        }


def test_jsonl_export_and_round_trip(subset, sqlite_engine, tmp_path):
    import_recllmsim(sqlite_engine, subset, study="ref")
    # two agent conversations made digital twins of a human one: the link must survive the trip
    with Session(sqlite_engine) as s:
        human = s.exec(select(Conversation).where(Conversation.user_kind == "human")).first()
        twins = s.exec(select(Conversation).where(Conversation.user_kind == "agent").limit(2)).all()
        for t in twins:
            t.twin_of_id = human.id
            s.add(t)
        s.commit()
        human_ext, twin_exts = human.external_id, {t.external_id for t in twins}
    out = tmp_path / "out"
    paths = export_study(sqlite_engine, "ref", "jsonl", out)
    assert {p.name for p in paths} == {"conversations.jsonl"} | {f"{t}.csv" for t in TABLES}
    lines = [json.loads(x) for x in (out / "conversations.jsonl").read_text("utf-8").splitlines()]
    assert len(lines) == len(list(subset.rglob("*.json")))
    for line in lines:
        assert {
            "id",
            "user_kind",
            "scenario",
            "condition_id",
            "messages",
            "study",
            "status",
            "wave",
            "participant",
            "simulator",
            "assistant_model",
            "profile",
            "task_context",
            "started_at",
            "turns",
        } <= set(line)
        assert all(set(m) == {"role", "content"} for m in line["messages"])
        assert len(line["turns"]) == len(line["messages"])
        if line["user_kind"] == "human":
            assert line["participant"] and not line["participant"].startswith("User_")
            assert line["simulator"] is None
        else:
            assert line["simulator"]["model"] and line["participant"] is None
    human = next(x for x in lines if x["wave"] == "human_v2")
    assert any(t["satisfaction"] for t in human["turns"]) and human["assistant_model"] != "openai/gpt-4-turbo"

    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(fresh)
    rep = import_jsonl(fresh, out)
    assert rep.study == "ref" and rep.imported == len(lines) and not rep.malformed
    assert _counts(fresh, "ref") == _counts(sqlite_engine, "ref")
    # turn-level extras and label samples survive the trip
    with Session(fresh) as s:
        lab = s.exec(
            select(Label).join(LabelSource).where(LabelSource.name == "imported:recllmsim-gpt4o")
        ).first()
        assert isinstance(lab.samples, list) and len(lab.samples) == 3
        src = s.exec(select(LabelSource).where(LabelSource.name == "imported:recllmsim-gpt4o")).one()
        assert src.model == "openai/gpt-4o-2024-08-06" and src.params["labeller"] == "llm"
        linked = s.exec(select(Conversation).where(Conversation.twin_of_id.is_not(None))).all()
        assert {c.external_id for c in linked} == twin_exts
        assert {s.get(Conversation, c.twin_of_id).external_id for c in linked} == {human_ext}
    # re-importing the same JSONL adds nothing
    assert import_jsonl(fresh, out / "conversations.jsonl").imported == 0
    # a twin whose original is not in the file is imported without the link, and the report says so
    only_twins = tmp_path / "twins.jsonl"
    only_twins.write_text(
        "\n".join(
            x
            for x in (out / "conversations.jsonl").read_text("utf-8").splitlines()
            if json.loads(x)["twin_of"] is not None
        ),
        encoding="utf-8",
    )
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    rep = import_jsonl(other, only_twins)
    assert rep.imported == 2 and sum("twin original" in w for w in rep.warnings) == 2
    with Session(other) as s:
        assert not s.exec(select(Conversation).where(Conversation.twin_of_id.is_not(None))).all()
    other.dispose()
    fresh.dispose()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_formats(subset, sqlite_engine, tmp_path, fmt):
    import_recllmsim(sqlite_engine, subset, study="ref")
    paths = export_study(sqlite_engine, "ref", fmt, tmp_path / fmt)
    assert {p.name for p in paths} == {f"{t}.{fmt}" for t in (*TABLES, "records")}
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    turns = read(tmp_path / fmt / f"turns.{fmt}")
    convs = read(tmp_path / fmt / f"conversations.{fmt}")
    labels = read(tmp_path / fmt / f"labels.{fmt}")
    conds = read(tmp_path / fmt / f"conditions.{fmt}")
    n_files = len(list(subset.rglob("*.json")))
    assert len(convs) == n_files and convs["n_turns"].sum() == len(turns)
    assert set(convs["user_kind"]) == {"agent", "human"}
    assert set(conds["condition_id"]) >= set(convs["condition_id"])
    samples = labels.loc[labels["source"] == "imported:recllmsim-gpt4o", "samples"].dropna()
    assert len(json.loads(samples.iloc[0])) == 3


def test_export_errors(sqlite_engine, tmp_path):
    with pytest.raises(NotFoundError):
        export_study(sqlite_engine, "nope", "csv", tmp_path)
    with pytest.raises(UserInputError, match="format"):
        export_study(sqlite_engine, "nope", "xml", tmp_path)


def test_jsonl_malformed_lines(subset, sqlite_engine, tmp_path):
    import_recllmsim(sqlite_engine, subset, study="ref")
    export_study(sqlite_engine, "ref", "jsonl", tmp_path / "o")
    f = tmp_path / "o" / "conversations.jsonl"
    good = f.read_text("utf-8").splitlines()
    f.write_text(
        "\n".join(good + ["{oops", json.dumps({"id": 99, "user_kind": "robot"})]) + "\n", encoding="utf-8"
    )
    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(fresh)
    with pytest.raises(UserInputError, match="Nothing was imported"):
        import_jsonl(fresh, f, study="copy", strict=True)
    with Session(fresh) as s:
        assert s.exec(select(func.count(Conversation.id))).one() == 0
    # a file with nothing valid in it leaves no empty study behind
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n" + json.dumps({"id": 99, "user_kind": "robot"}) + "\n", encoding="utf-8")
    rep = import_jsonl(fresh, bad, study="empty")
    assert (
        rep.imported == 0
        and len(rep.malformed) == 2
        and any("nothing was written" in w for w in rep.warnings)
    )
    with Session(fresh) as s:
        from db.models import Study

        assert not s.exec(select(Study).where(Study.name == "empty")).all()
    rep = import_jsonl(fresh, f, study="copy")
    assert rep.imported == len(good) and len(rep.malformed) == 2
    assert rep.malformed[0][0] == f"conversations.jsonl:{len(good) + 1}"
    fresh.dispose()


def test_cli_import_export_round_trip(subset, use_db, tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        cli_main(["import", "recllmsim", str(subset), "--study", "cli"])
    assert ex.value.code in (0, None)
    assert "conversations imported" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ex:
        cli_main(["export", "--study", "cli", "--format", "jsonl", "--out", str(tmp_path / "x")])
    assert ex.value.code in (0, None)
    assert (tmp_path / "x" / "conversations.jsonl").is_file()
    with pytest.raises(SystemExit) as ex:
        cli_main(["import", "jsonl", str(tmp_path / "x"), "--study", "cli-copy"])
    assert ex.value.code in (0, None)
    eng = make_engine(use_db)
    a, b = _counts(eng, "cli"), _counts(eng, "cli-copy")
    assert (
        a["conversations"] == b["conversations"] and a["turns"] == b["turns"] and a["labels"] == b["labels"]
    )
    eng.dispose()
    with pytest.raises(SystemExit) as ex:
        cli_main(["export", "--study", "missing", "--out", str(tmp_path / "y")])
    assert ex.value.code == 2
    assert "no study named 'missing'" in capsys.readouterr().err
    # a file where nothing is valid exits 2 (a script must not take it for an import); re-importing is fine
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(SystemExit) as ex:
        cli_main(["import", "jsonl", str(bad), "--study", "bad"])
    assert ex.value.code == 2 and "nothing in" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SystemExit) as ex:
        cli_main(["import", "jsonl", str(empty), "--study", "empty"])
    assert ex.value.code == 2 and "holds no conversation" in capsys.readouterr().err
    eng = make_engine(use_db)
    with Session(eng) as s:
        assert s.exec(select(Study).where(Study.name == "empty")).first() is None  # nothing written
    eng.dispose()
    with pytest.raises(SystemExit) as ex:
        cli_main(["import", "jsonl", str(tmp_path / "x"), "--study", "cli-copy"])
    assert ex.value.code in (0, None)  # all already present: not an error


def test_exports_hold_no_secrets(subset, sqlite_engine, tmp_path):
    import_recllmsim(sqlite_engine, subset, study="ref")
    with Session(sqlite_engine) as s:
        p = s.exec(select(Participant)).first()
        p.invite_token_hash = "SECRET-TOKEN-HASH"
        s.add(p)
        s.commit()
    export_study(sqlite_engine, "ref", "jsonl", tmp_path / "o")
    blob = "".join(f.read_text("utf-8") for f in (tmp_path / "o").iterdir())
    assert "SECRET-TOKEN-HASH" not in blob and "password" not in blob.lower()
    # participants appear by pseudonym only (the dataset path in external_id is the conversation's id)
    assert '"participant": "User_' not in blob and "recllmsim-v2" not in blob
    kinds = Counter(
        json.loads(x)["user_kind"]
        for x in (tmp_path / "o" / "conversations.jsonl").read_text("utf-8").splitlines()
    )
    assert kinds["human"] > 0 and kinds["agent"] > 0


def _line(i: int, content: str = "hello") -> str:
    return json.dumps(
        {
            "id": i,
            "user_kind": "human",
            "scenario": "travel",
            "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}],
            "task_context": {"text": "Plan a trip."},
            "assistant_model": "openai/gpt-4o-mini",
            "study": "s",
        },
        ensure_ascii=False,
    )


def test_import_jsonl_not_utf8(use_db, tmp_path, capsys):
    """A Latin-1 byte in line 2 used to be a UnicodeDecodeError traceback (exit 1): now one line
    naming the file and the byte offset, exit 2, and nothing written."""
    from tests.cli_helpers import run_cli

    f = tmp_path / "c.jsonl"
    first = (_line(1) + "\n").encode("utf-8")
    f.write_bytes(first + _line(2, "caf\u00e9").encode("latin-1") + b"\n" + (_line(3) + "\n").encode())
    code, _, err = run_cli(["import", "jsonl", str(f)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    offset = len(first) + _line(2, "caf\u00e9").encode("latin-1").index(b"\xe9")
    assert str(f) in lines[0] and f"byte offset {offset}" in lines[0] and "UTF-8" in lines[0]
    eng = make_engine(use_db)
    with Session(eng) as s:
        assert s.exec(select(func.count(Conversation.id))).one() == 0
        assert s.exec(select(func.count(Study.id))).one() == 0
    eng.dispose()
    # a side table that is not UTF-8 is refused the same way
    f.write_text(_line(1) + "\n", encoding="utf-8")
    (tmp_path / "questionnaires.csv").write_bytes(b"conversation_id,questionnaire,item,value\n1,q,i,\xff\n")
    code, _, err = run_cli(["import", "jsonl", str(f)], capsys)
    assert code == 2 and "questionnaires.csv" in err and "byte offset 47" in err, err


def test_import_limits(sqlite_engine, tmp_path):
    """A turn over WORKBENCH_MAX_TURN_CHARS makes its line malformed (the others import); a file over
    WORKBENCH_MAX_IMPORT_MB is refused before reading."""
    f = tmp_path / "c.jsonl"
    f.write_text(_line(1) + "\n" + _line(2, "x" * 101) + "\n", encoding="utf-8")
    rep = import_jsonl(sqlite_engine, f, max_turn_chars=100)
    assert rep.imported == 1 and len(rep.malformed) == 1
    assert "101 characters, over the limit of 100" in rep.malformed[0][1]
    with pytest.raises(UserInputError, match="over the import limit"):
        import_jsonl(sqlite_engine, f, study="other", max_file_mb=0.0001)
    from db.settings import Settings

    s = Settings.from_env({"WORKBENCH_MAX_TURN_CHARS": "50", "WORKBENCH_MAX_IMPORT_MB": "1.5"})
    assert (s.max_turn_chars, s.max_import_mb) == (50, 1.5)
    assert Settings.from_env({}).max_turn_chars == 100_000
    with pytest.raises(UserInputError, match="WORKBENCH_MAX_TURN_CHARS must be a positive whole number"):
        Settings.from_env({"WORKBENCH_MAX_TURN_CHARS": "lots"})
