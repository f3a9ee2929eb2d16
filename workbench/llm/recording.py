"""Recording and caching: ``recorded(model, engine, purpose, ...)`` writes every call as an LLMCall.

The response cache reuses LLMCall rows: a successful call's ``cache_key`` (a hash of the model name,
messages and parameters, seed included) answers later identical calls for free. Cache hits are
recorded too (``cache_hit=True``, cost 0), so a conversation's provenance is complete either way.
API keys never reach a row: only ``public_options()`` and call parameters are stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection, Engine

from db.models import LLMCall
from db.types import utcnow
from db.worker import DatabaseWorker
from workbench.llm.base import JSON_SCHEMA, ChatModel, Completion, LLMError, Stream, Usage, validate_messages

_T = LLMCall.__table__
# Built once: building and cache-keying a statement per call costs more than running it.
_LOOKUP = (
    select(_T.c.id, _T.c.response, _T.c.prompt_tokens, _T.c.completion_tokens)
    .where(_T.c.cache_key == bindparam("key"), _T.c.error.is_(None), _T.c.cache_hit.is_(False))
    .order_by(_T.c.id)
    .limit(1)
)
_INSERT = insert(_T)


def _lookup_in(conn: Connection, key: str) -> dict | None:
    row = conn.execute(_LOOKUP, {"key": key}).first()
    return dict(row._mapping) if row else None


def _insert_in(conn: Connection, values: dict) -> int:
    return conn.execute(_INSERT, values).inserted_primary_key[0]


def _insert_for(conn: Connection, values: dict, c: Completion) -> int:
    c.call_id = _insert_in(conn, values)
    return c.call_id


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RecordedModel(ChatModel):
    """The same interface as the wrapped model; every call is written to the database."""

    def __init__(
        self,
        inner: ChatModel,
        engine: Engine,
        purpose: str,
        study_id: int | None = None,
        conversation_id: int | None = None,
        run_id: int | None = None,
        prompt_version: str | None = None,
        cache: bool = True,
        worker: DatabaseWorker | None = None,
        defer_writes: bool = False,
    ):
        # No ChatModel.__init__: options belong to the inner model.
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model
        self.name = inner.name
        self.options = inner.options
        self.engine = engine
        self.purpose = purpose
        self.context = {
            "study_id": study_id,
            "conversation_id": conversation_id,
            "run_id": run_id,
            "prompt_version": prompt_version,
        }
        self.cache = bool(cache)
        self._options_record = inner.public_options()
        # Async calls do their database work here (shared by bind() copies; batched commits).
        self.worker = worker if worker is not None and worker.engine is engine else DatabaseWorker(engine)
        # defer_writes: async calls queue their LLMCall row and return without waiting for it;
        # ``Completion.record`` is the write's future and ``call_id`` is set once it has run.
        self.defer_writes = defer_writes

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"<recorded {self.name} purpose={self.purpose}>"

    def bind(self, **context: Any) -> RecordedModel:
        """A copy writing other ids (e.g. ``conversation_id=``), sharing the model and its clients."""
        new = object.__new__(RecordedModel)
        new.__dict__.update(self.__dict__)
        new.context = {**self.context, **context}
        if "purpose" in context:
            new.purpose = new.context.pop("purpose")
        return new

    def check_params(self, params: dict) -> dict:
        return self.inner.check_params(params)

    def public_options(self) -> dict:
        return self._options_record

    # ------------------------------------------------------------------ database
    def _lookup(self, key: str) -> dict | None:
        with self.engine.connect() as conn:
            return _lookup_in(conn, key)

    def _write(
        self,
        messages: list[dict],
        params: dict,
        key: str,
        c: Completion | None,
        error: str | None,
        latency_ms: float,
        hit: bool,
    ) -> int:
        values = self._values(messages, params, key, c, error, latency_ms, hit)
        with self.engine.begin() as conn:
            return _insert_in(conn, values)

    async def _awrite(
        self,
        messages: list[dict],
        params: dict,
        key: str,
        c: Completion | None,
        error: str | None,
        latency_ms: float,
        hit: bool,
    ) -> int:
        values = self._values(messages, params, key, c, error, latency_ms, hit)
        return await self.worker.run(_insert_in, values)

    async def _arecord(self, messages: list[dict], params: dict, key: str, c: Completion, hit: bool) -> None:
        values = self._values(messages, params, key, c, None, c.latency_ms, hit)
        if self.defer_writes:
            c.record = self.worker.submit(_insert_for, values, c)
        else:
            c.call_id = await self.worker.run(_insert_in, values)

    def _values(
        self,
        messages: list[dict],
        params: dict,
        key: str,
        c: Completion | None,
        error: str | None,
        latency_ms: float,
        hit: bool,
    ) -> dict:
        return dict(
            provider=self.provider,
            model=self.name,
            purpose=self.purpose,
            params={
                "call": params,
                "options": self._options_record,
                **({"json_grammar": True} if self._constrained() else {}),
            },
            messages=messages,
            response=c.text if c else None,
            raw=None if (c is None or hit) else c.raw,
            prompt_tokens=c.usage.prompt_tokens if c else None,
            completion_tokens=c.usage.completion_tokens if c else None,
            cost_usd=(0.0 if hit else c.cost_usd) if c else None,
            latency_ms=latency_ms,
            error=error,
            cache_key=key,
            cache_hit=hit,
            created_at=utcnow(),
            **self.context,
        )

    def _from_cache(self, row: dict, t0: float) -> Completion:
        return Completion(
            text=row["response"] or "",
            model=self.name,
            usage=Usage(row["prompt_tokens"] or 0, row["completion_tokens"] or 0),
            latency_ms=(time.perf_counter() - t0) * 1000,
            cost_usd=0.0,
            cached=True,
            raw={"cached_from": row["id"]},
        )

    def _prepare(self, messages: Any, params: dict) -> tuple[list[dict], dict, str]:
        msgs = validate_messages(messages)
        p = self.check_params(params)
        # A grammar-constrained reply is a different reply: it must not share a cache entry with a free one.
        return msgs, p, cache_key(self.name, msgs, {**p, "json_grammar": True} if self._constrained() else p)

    def _constrained(self) -> bool:
        return self.inner.constrains_json and JSON_SCHEMA.get() is not None

    # ------------------------------------------------------------------ calls
    def complete(self, messages: list[dict], **params: Any) -> Completion:
        msgs, p, key = self._prepare(messages, params)
        t0 = time.perf_counter()
        if self.cache:
            row = self._lookup(key)
            if row:
                c = self._from_cache(row, t0)
                c.call_id = self._write(msgs, p, key, c, None, c.latency_ms, True)
                return c
        try:
            c = self.inner._complete_checked(msgs, p)
        except LLMError as exc:
            self._write(msgs, p, key, None, str(exc), (time.perf_counter() - t0) * 1000, False)
            raise
        c.call_id = self._write(msgs, p, key, c, None, c.latency_ms, False)
        return c

    async def acomplete(self, messages: list[dict], **params: Any) -> Completion:
        msgs, p, key = self._prepare(messages, params)
        t0 = time.perf_counter()
        # Database work runs in the worker's thread so in-flight conversations do not wait on each other.
        if self.cache:
            row = await self.worker.run(_lookup_in, key)
            if row:
                c = self._from_cache(row, t0)
                await self._arecord(msgs, p, key, c, True)
                return c
        try:
            c = await self.inner._acomplete_checked(msgs, p)
        except LLMError as exc:
            await self._awrite(msgs, p, key, None, str(exc), (time.perf_counter() - t0) * 1000, False)
            raise
        await self._arecord(msgs, p, key, c, False)
        return c

    def stream(self, messages: list[dict], **params: Any) -> Stream:
        msgs, p, key = self._prepare(messages, params)
        t0 = time.perf_counter()
        if self.cache:
            row = self._lookup(key)
            if row:
                c = self._from_cache(row, t0)

                def finish_cached(_text: str) -> Completion:
                    c.call_id = self._write(msgs, p, key, c, None, c.latency_ms, True)
                    return c

                return Stream(iter([c.text]), finish_cached)
        inner = self.inner.stream(msgs, **p)

        def pieces() -> Iterator[str]:
            try:
                yield from inner
            except LLMError as exc:
                self._write(msgs, p, key, None, str(exc), (time.perf_counter() - t0) * 1000, False)
                raise

        def finish(_text: str) -> Completion:
            c = inner.completion
            c.call_id = self._write(msgs, p, key, c, None, c.latency_ms, False)
            return c

        return Stream(pieces(), finish)


def recorded(
    model: ChatModel,
    engine: Engine,
    purpose: str,
    study_id: int | None = None,
    conversation_id: int | None = None,
    run_id: int | None = None,
    prompt_version: str | None = None,
    cache: bool = True,
    worker: DatabaseWorker | None = None,
    defer_writes: bool = False,
) -> RecordedModel:
    """``model`` with every call written as an LLMCall row (and answered from the cache when allowed).

    The cache is off when ``cache=False`` (the shells pass ``Settings.llm_cache`` and ``--no-cache``). ``worker``: a DatabaseWorker to
    share with other async database work (the batch runner passes its own); ``defer_writes``: async
    calls return before their row is written (``Completion.record`` is the write's future).
    """
    if isinstance(model, RecordedModel):
        model = model.inner
    return RecordedModel(
        model,
        engine,
        purpose,
        study_id=study_id,
        conversation_id=conversation_id,
        run_id=run_id,
        prompt_version=prompt_version,
        cache=cache,
        worker=worker,
        defer_writes=defer_writes,
    )
