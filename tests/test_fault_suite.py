"""Fault injection: what the workbench does when things go wrong (huge inputs, killed processes, a
database that goes away, an LLM server that misbehaves). Each test's docstring says what it tried and
what it found. Kept lean: tiny studies, few turns, short timeouts."""

from __future__ import annotations

import json

from sqlalchemy import update
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import LabelSource, Turn
from tests.cli_helpers import run_cli
from workbench.dataio.jsonl import import_jsonl


def _jsonl_line(i: int, kind: str, text: str) -> str:
    line = {
        "id": i,
        "user_kind": kind,
        "scenario": "travel",
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "Sure, here is a plan."},
            {"role": "user", "content": "Thanks, that helps because it is cheap."},
            {"role": "assistant", "content": "Glad to help."},
        ],
        "task_context": {"text": "Plan a trip."},
        "assistant_model": "openai/gpt-4o-mini",
        "study": "big",
    }
    if kind == "agent":
        line["simulator"] = {"model": "openai/fake-sim"}
    return json.dumps(line)


def test_huge_turn_in_database_features_and_analyze(use_db, tmp_path, capsys):
    """Tried: a user turn of 1.2 million characters written straight into the database (past the
    import limit), then `features`, `analyze`, the rule labeller and the trained labeller's texts.
    Found before: `analyze` died with spaCy's E088 traceback (texts over 1,000,000 characters). Now:
    the pipelines read such a turn up to 100,000 characters and say how many they cut."""
    from analysis.features import features_df
    from annotation.labellers.rules import label_study
    from annotation.labellers.trained import user_texts_df
    from db.repo import conversations_df, get_study

    f = tmp_path / "c.jsonl"
    kinds = ["human", "human", "human", "agent", "agent", "agent"]
    f.write_text("\n".join(_jsonl_line(i, k, f"I want to go to Rome {i}") for i, k in enumerate(kinds)))
    eng = make_engine(use_db)
    upgrade(eng)
    assert import_jsonl(eng, f).imported == 6
    huge = "word " * 240_000  # 1.2M characters
    with Session(eng) as s:
        first = s.exec(select(Turn).where(Turn.role == "user").order_by(Turn.id)).first()
        s.exec(update(Turn).where(Turn.id == first.id).values(content=huge))
        s.commit()
    code, out, err = run_cli(["features", "--study", "big"], capsys)
    assert code == 0 and "Traceback" not in err, err
    code, out, err = run_cli(["analyze", "--study", "big", "--out", str(tmp_path / "an")], capsys)
    assert code == 0 and "Traceback" not in err, err
    with Session(eng) as s:
        study = get_study(s, "big")
        convs = conversations_df(s, study.id)
        texts = user_texts_df(s, study.id)
    feats = features_df(eng, study.id, convs, recompute=True)
    assert feats.attrs["texts_cut"] == 1 and "100,000 characters" in feats.attrs["note"]
    assert texts.attrs["texts_cut"] == 1 and texts["text"].str.len().max() < 100_100
    name, n, _ = label_study(eng, "big")
    with Session(eng) as s:
        assert s.exec(select(LabelSource).where(LabelSource.name == name)).one().params["texts_cut"] == 1
    eng.dispose()
