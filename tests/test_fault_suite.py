"""Fault injection: what the workbench does when things go wrong (huge inputs, killed processes, a
database that goes away, an LLM server that misbehaves). Each test's docstring says what it tried and
what it found. Kept lean: tiny studies, few turns, short timeouts."""

from __future__ import annotations

import json

from sqlalchemy import update
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import Condition, Conversation, LabelSource, LLMCall, Turn
from tests.cli_helpers import run_cli
from workbench.dataio.jsonl import import_jsonl
from workbench.testing.fake_llm_server import FakeLLMServer


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


def test_restarted_conversation_keeps_calls_apart(engine, monkeypatch, tmp_path, capsys):
    """Tried: a conversation whose assistant fails on its second turn, then the run again with
    --retry-failed. Found before: the restarted conversation carried the calls of the failed attempt
    too (its call count and cost were inflated). Now the failed attempt's calls are marked
    params["attempt"] = "abandoned" (still linked to the conversation) and counted apart in the
    run's cost (run_costs, the simulate summary, the exported run info)."""
    from tests.test_runner import _study, responder
    from workbench.dataio.export import export_study
    from workbench.simulation import SimulationSpec, run_simulation
    from workbench.simulation.runner import ABANDONED, run_costs

    _study(engine, name="r")
    with Session(engine) as s:
        key = s.exec(select(Condition.key).order_by(Condition.id)).first()
    spec = dict(study="r", simulator_model="openai/fake-sim", n_per_condition=1, conditions=[key])
    fail = {"on": True}
    ok = responder(2)

    def flaky(req):
        if fail["on"] and "role-playing" not in req.messages[0]["content"]:
            if sum(1 for m in req.messages if m["role"] == "user") >= 2:
                raise RuntimeError("assistant broke")
        return ok(req)

    fast = {"openai/fake-assistant": {"max_retries": 0}, "openai/fake-sim": {"max_retries": 0}}
    with FakeLLMServer(responder=flaky) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        first = run_simulation(engine, SimulationSpec(**spec), model_options=fast)
        assert first.failed == 1
        with Session(engine) as s:
            conv = s.exec(select(Conversation)).one()
            n_first = len(s.exec(select(LLMCall).where(LLMCall.conversation_id == conv.id)).all())
        assert conv.status == "failed" and n_first >= 3
        fail["on"] = False
        again = run_simulation(engine, SimulationSpec(**spec, retry_failed=True), model_options=fast)
        assert again.completed == 1
    with Session(engine) as s:
        calls = s.exec(select(LLMCall).where(LLMCall.conversation_id == conv.id)).all()
        abandoned = [c for c in calls if c.params.get("attempt") == ABANDONED]
        current = [c for c in calls if c.params.get("attempt") != ABANDONED]
        assert len(abandoned) == n_first and len(current) == 5  # 3 simulator + 2 assistant turns
        turns = s.exec(select(Turn).where(Turn.conversation_id == conv.id)).all()
        assert {t.llm_call_id for t in turns} <= {c.id for c in current}
        costs = run_costs(s, [conv.run_id])[conv.run_id]
    assert costs["calls"] == 5 and costs["abandoned_calls"] == n_first
    export_study(engine, "r", "jsonl", tmp_path / "out")
    line = json.loads((tmp_path / "out" / "conversations.jsonl").read_text().splitlines()[0])
    assert line["run"]["cost"]["abandoned_calls"] == n_first and line["run"]["cost"]["calls"] == 5
