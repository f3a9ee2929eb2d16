"""End to end with the real local model (SmolLM2-135M through llama.cpp) into the database."""

from __future__ import annotations

import importlib.util
import os

import pytest
from sqlmodel import Session, select

from db.models import Conversation, LLMCall, Turn
from workbench.simulation import SimulationSpec, run_simulation
from workbench.studies import create_study

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.slow
def test_local_smollm2_conversation(sqlite_engine):
    if not HAVE_LLAMA and not os.environ.get("CI"):
        pytest.skip("llama_cpp is not importable: pip install 'llm-user-workbench[local]'")
    with Session(sqlite_engine) as s:
        create_study(
            s,
            "local",
            "local/smollm2",
            scenarios=["travel_planning"],
            profiles=1,
            language="en",
            system_prompt="You are a helpful travel assistant.",
            temperature=0.2,
            max_tokens=48,
        )
        s.commit()
        key = s.exec(select(__import__("db.models", fromlist=["Condition"]).Condition.key)).first()
    summ = run_simulation(
        sqlite_engine,
        SimulationSpec(
            study="local",
            simulator_model="local/smollm2",
            conditions=[key],
            min_turns=2,
            max_turns=2,
            temperature=0.3,
            simulator_max_tokens=48,
            concurrency=1,
        ),
    )
    assert summ.completed == 1, summ.lines()
    with Session(sqlite_engine) as s:
        conv = s.exec(select(Conversation)).one()
        turns = s.exec(select(Turn).where(Turn.conversation_id == conv.id).order_by(Turn.index)).all()
        users = [t for t in turns if t.role == "user"]
        assert conv.status == "completed" and len(users) >= 2 and all(t.content.strip() for t in turns)
        assert conv.end_reason in ("max_turns", "user_ended")
        calls = s.exec(select(LLMCall)).all()
        assert {c.model for c in calls} == {"local/smollm2"} and all(c.cost_usd == 0 for c in calls)


@pytest.mark.slow
def test_local_smollm2_structured_output_is_grammar_constrained(sqlite_engine):
    """A structured call to the local model decodes under a grammar built from the JSON schema, so even
    the 135M model returns valid labels; the call is recorded as constrained and cached apart from a
    free-text reply to the same messages."""
    if not HAVE_LLAMA and not os.environ.get("CI"):
        pytest.skip("llama_cpp is not importable: pip install 'llm-user-workbench[local]'")
    import asyncio
    import json

    from workbench.llm import get_model
    from workbench.llm.recording import recorded

    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["politeness", "turns"],
        "properties": {
            "politeness": {"enum": ["Polite", "Neutral", "Impolite"]},
            "turns": {
                "type": "object",
                "additionalProperties": False,
                "required": ["1", "3"],
                "properties": {"1": {"enum": ["yes", "no"]}, "3": {"enum": ["yes", "no"]}},
            },
        },
    }
    msgs = [
        {
            "role": "user",
            "content": "Label the user's politeness: 'pls give me hotels'. Turns 1 and 3: made up?",
        }
    ]
    model = recorded(get_model("local/smollm2"), sqlite_engine, "labeller")
    c = asyncio.run(
        model.acomplete_json(msgs, schema, json_retries=0, max_tokens=60, temperature=0.7, seed=1)
    )
    data = json.loads(c.text)
    assert data["politeness"] in ("Polite", "Neutral", "Impolite") and set(data["turns"]) == {"1", "3"}
    free = model.complete(msgs, max_tokens=8, temperature=0.7, seed=1)  # a plain call: no grammar
    with Session(sqlite_engine) as s:
        calls = s.exec(select(LLMCall).order_by(LLMCall.id)).all()
    assert calls[0].params["json_grammar"] is True and "json_grammar" not in calls[-1].params
    assert free.text is not None
    # the same messages and parameters with and without the grammar are different cache entries
    from workbench.llm.base import JSON_SCHEMA

    _, _, free_key = model._prepare(msgs, {"seed": 1})
    token = JSON_SCHEMA.set(schema)
    try:
        _, _, constrained_key = model._prepare(msgs, {"seed": 1})
    finally:
        JSON_SCHEMA.reset(token)
    assert free_key != constrained_key


@pytest.mark.slow
def test_local_context_overflow_fails_at_once_with_the_fix(sqlite_engine):
    """A prompt longer than the context is not retried (it would fail the same way) and the error
    names the option to change; the failed call is recorded."""
    if not HAVE_LLAMA and not os.environ.get("CI"):
        pytest.skip("llama_cpp is not importable: pip install 'llm-user-workbench[local]'")
    from workbench.llm import LLMError, get_model
    from workbench.llm.recording import recorded

    model = recorded(get_model("local/smollm2", n_ctx=256), sqlite_engine, "simulator")
    with pytest.raises(LLMError, match="context of 256 tokens: raise the model option n_ctx") as err:
        model.complete([{"role": "user", "content": "plan a trip " * 300}], max_tokens=8)
    assert not err.value.retryable
    with Session(sqlite_engine) as s:
        calls = s.exec(select(LLMCall)).all()
        assert len(calls) == 1 and "n_ctx" in (calls[0].error or "")


@pytest.mark.slow
def test_concurrent_calls_to_the_shared_local_model_do_not_crash(tmp_path):
    """Several model objects share one loaded llama.cpp model; calls from several threads at once
    (a run with --concurrency 4, or participants in the app) must wait for each other. Before the
    process-wide lock this died with a segfault, so the check runs in a child process."""
    if not HAVE_LLAMA and not os.environ.get("CI"):
        pytest.skip("llama_cpp is not importable: pip install 'llm-user-workbench[local]'")
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "threads.py"
    script.write_text(
        "import sys, threading\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from workbench.llm import get_model\n"
        "models = [get_model('local/smollm2') for _ in range(4)]\n"
        "errors = []\n"
        "def work(m, i):\n"
        "    try:\n"
        "        for j in range(3):\n"
        "            m.complete([{'role': 'user', 'content': f'Say hello {i} {j}'}], max_tokens=8, seed=i)\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=work, args=(m, i)) for i, m in enumerate(models)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('errors', errors)\n",
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "errors []" in proc.stdout
