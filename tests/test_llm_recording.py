"""Recording, the response cache, and that no API key is ever stored."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import Session, select

from db.models import LLMCall
from db.settings import Settings
from workbench.llm import LLMError, ScriptedModel, get_model, recorded
from workbench.testing.fake_llm_server import FakeLLMServer

MSGS = [{"role": "user", "content": "hello"}]


def _rows(engine):
    with Session(engine) as s:
        return s.exec(select(LLMCall).order_by(LLMCall.id)).all()


def test_recorded_call_and_cache(engine):
    inner = ScriptedModel(["first", "second", "third"], name="scripted/rec")
    m = recorded(inner, engine, "simulator", prompt_version="v9")
    c1 = m.complete(MSGS, temperature=0.7, seed=1)
    c2 = m.complete(MSGS, temperature=0.7, seed=1)  # identical -> cache
    c3 = m.complete(MSGS, temperature=0.7, seed=2)  # other seed -> new call
    assert (c1.text, c2.text, c3.text) == ("first", "first", "second")
    assert not c1.cached and c2.cached and c2.cost_usd == 0
    rows = _rows(engine)
    assert [r.cache_hit for r in rows] == [False, True, False]
    assert rows[0].id == c1.call_id and rows[0].purpose == "simulator" and rows[0].prompt_version == "v9"
    assert rows[0].params["call"] == {"temperature": 0.7, "seed": 1}
    assert rows[0].messages == MSGS and rows[0].response == "first" and rows[0].cache_key == rows[1].cache_key
    assert rows[0].prompt_tokens and rows[0].latency_ms is not None and rows[0].provider == "scripted"


def test_cache_off(sqlite_engine, monkeypatch):
    m = recorded(ScriptedModel(["a", "b"]), sqlite_engine, "assistant", cache=False)
    assert [m.complete(MSGS).text for _ in range(2)] == ["a", "b"]
    monkeypatch.setenv("WORKBENCH_LLM_CACHE", "0")
    m = recorded(ScriptedModel(["c", "d"]), sqlite_engine, "assistant", cache=Settings.from_env().llm_cache)
    assert [m.complete(MSGS).text for _ in range(2)] == ["c", "d"]


def test_errors_recorded_not_cached(sqlite_engine):
    m = recorded(ScriptedModel([LLMError("down"), "ok"]), sqlite_engine, "labeller")
    with pytest.raises(LLMError):
        m.complete(MSGS)
    assert m.complete(MSGS).text == "ok"
    rows = _rows(sqlite_engine)
    assert rows[0].error == "down" and rows[0].response is None and rows[1].error is None


def test_async_stream_json_and_bind(sqlite_engine):
    m = recorded(ScriptedModel(lambda msgs: '{"end": true}'), sqlite_engine, "simulator", study_id=None)
    c = asyncio.run(m.bind(purpose="labeller").acomplete(MSGS))
    assert c.call_id and _rows(sqlite_engine)[-1].purpose == "labeller"
    s = m.stream([{"role": "user", "content": "stream me"}])
    assert "".join(s) == '{"end": true}' and s.completion.call_id
    j = m.complete_json([{"role": "user", "content": "json"}], {"type": "object", "required": ["end"]})
    assert j.data == {"end": True}
    s2 = m.stream([{"role": "user", "content": "stream me"}])  # cached stream
    assert "".join(s2) == '{"end": true}' and s2.completion.cached


def test_no_api_key_stored(sqlite_engine, monkeypatch):
    secret = "sk-THIS-IS-SECRET-42"
    with FakeLLMServer() as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", secret + "-env")
        for model in (
            get_model("openai/gpt-4o-mini", base_url=srv.openai_base_url, api_key=secret),
            get_model("anthropic/claude-haiku-4-5", base_url=srv.anthropic_base_url),
        ):
            r = recorded(model, sqlite_engine, "assistant")
            r.complete(MSGS)
            list(r.stream([{"role": "user", "content": "s"}]))
            assert secret not in repr(model.public_options())
        assert srv.requests[0].headers["authorization"] == f"Bearer {secret}"
    with sqlite_engine.connect() as conn:
        dump = json.dumps([list(map(str, row)) for row in conn.exec_driver_sql("SELECT * FROM llmcall")])
    assert "SECRET" not in dump and len(_rows(sqlite_engine)) == 4


def test_deferred_writes_share_the_database_worker(engine):
    """defer_writes: the call returns before its row is written; call_id arrives with the write."""
    from db.worker import DatabaseWorker

    worker = DatabaseWorker(engine)
    m = recorded(ScriptedModel(["a", "b"]), engine, "simulator", worker=worker, defer_writes=True)

    async def go():
        c1 = await m.acomplete(MSGS, seed=1)
        assert c1.record is not None
        await c1.record
        c2 = await m.acomplete(MSGS, seed=1)  # queued after c1's row: sees it in the cache
        await c2.record
        return c1, c2

    c1, c2 = asyncio.run(go())
    rows = _rows(engine)
    assert [r.id for r in rows] == [c1.call_id, c2.call_id] and c2.cached and rows[1].cache_hit


def test_database_worker_batches_and_isolates_failures(engine):
    """Work queued together commits together; one failing item fails only its own caller."""
    from sqlalchemy import insert
    from sqlalchemy import select as sa_select

    from db.types import utcnow
    from db.worker import DatabaseWorker

    worker = DatabaseWorker(engine)
    t = LLMCall.__table__

    def add(conn, text):
        return conn.execute(
            insert(t).values(
                provider="x", model="x/y", purpose="test", response=text, cache_hit=False, created_at=utcnow()
            )
        ).inserted_primary_key[0]

    def boom(conn):
        raise ValueError("bad write")

    def count(conn):
        return len(conn.execute(sa_select(t.c.id)).all())

    async def go():
        futs = [worker.submit(add, "a"), worker.submit(boom), worker.submit(add, "b"), worker.submit(count)]
        return await asyncio.gather(*futs, return_exceptions=True)

    a, err, b, n = asyncio.run(go())
    assert isinstance(err, ValueError) and str(err) == "bad write"
    assert isinstance(a, int) and isinstance(b, int) and n == 2
    assert [r.response for r in _rows(engine)] == ["a", "b"]
    # A later event loop (the thread may have stopped after idling) works the same.
    assert asyncio.run(worker.run(count)) == 2


def test_json_schema_is_visible_to_provider_hooks_only_during_structured_calls():
    """complete_json/acomplete_json expose their schema (JSON_SCHEMA) to the provider hooks of that
    call, through asyncio.to_thread too, and clear it afterwards; unconstrained providers ignore it."""
    import asyncio

    from workbench.llm import ScriptedModel
    from workbench.llm.base import JSON_SCHEMA

    seen = []

    def reply(_msgs):
        seen.append(JSON_SCHEMA.get())
        return '{"a": 1}'

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    m = ScriptedModel(reply)
    assert not m.constrains_json
    m.complete_json([{"role": "user", "content": "x"}], schema)
    asyncio.run(m.acomplete_json([{"role": "user", "content": "x"}], schema))
    m.complete([{"role": "user", "content": "x"}])
    assert seen == [schema, schema, None] and JSON_SCHEMA.get() is None
