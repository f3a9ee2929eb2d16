"""End to end with the real local model (SmolLM2-135M through llama.cpp) into the database."""

from __future__ import annotations

import importlib.util
import os

import pytest
from sqlmodel import Session, select

from db.models import Conversation, LLMCall, Turn
from workbench.simulation.runner import run_simulation
from workbench.studies import create_study

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.slow
def test_local_smollm2_conversation(sqlite_engine):
    if not HAVE_LLAMA and not os.environ.get("CI"):
        pytest.skip("llama_cpp is not importable: pip install 'llm-user-workbench[local]'")
    with Session(sqlite_engine) as s:
        create_study(s, "local", "local/smollm2", scenarios=["travel_planning"], profiles=1, language="en",
                     system_prompt="You are a helpful travel assistant.", temperature=0.2, max_tokens=48)
        s.commit()
        key = s.exec(select(__import__("db.models", fromlist=["Condition"]).Condition.key)).first()
    summ = run_simulation(sqlite_engine, "local", "local/smollm2", conditions=[key], min_turns=2, max_turns=2,
                          temperature=0.3, simulator_max_tokens=48, concurrency=1)
    assert summ.completed == 1, summ.lines()
    with Session(sqlite_engine) as s:
        conv = s.exec(select(Conversation)).one()
        turns = s.exec(select(Turn).where(Turn.conversation_id == conv.id).order_by(Turn.index)).all()
        users = [t for t in turns if t.role == "user"]
        assert conv.status == "completed" and len(users) >= 2 and all(t.content.strip() for t in turns)
        assert conv.end_reason in ("max_turns", "user_ended")
        calls = s.exec(select(LLMCall)).all()
        assert {c.model for c in calls} == {"local/smollm2"} and all(c.cost_usd == 0 for c in calls)
