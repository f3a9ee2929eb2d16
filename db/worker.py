"""``DatabaseWorker``: database work for asyncio code, off the event loop, batched into transactions.

One thread per worker runs the queued functions in order. Everything queued while a batch runs goes
into the next batch, and a batch is one transaction, so many in-flight conversations cost one commit
instead of one each (and no thread pool hops). If a batch fails, its functions are run again one
transaction each, so one bad write fails only its own caller. Functions take a Connection and must
do nothing but database work (they may run twice when a batch is retried, always after a rollback).
The thread stops after a second of idleness, so a worker holds no thread or connection when unused.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

IDLE_SECONDS = 1.0
MAX_BATCH = 256


class DatabaseWorker:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` in the worker thread, inside a transaction; its result or its exception."""
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(conn, *args)`` and return its future at once (call from the event loop).

        Work runs in the order it was submitted, so later work sees what earlier work wrote.
        """
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((fn, args, loop, fut))
        if not self._running:
            self._start()
        return fut

    def _start(self) -> None:
        with self._lock:
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name="workbench-db", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                batch = [self._q.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:
                    if self._q.empty():
                        self._running = False
                        return
                continue
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self._execute(batch)

    def _execute(self, batch: list) -> None:
        outcomes: list = []
        try:
            with self.engine.begin() as conn:
                for fn, args, _loop, _fut in batch:
                    outcomes.append((True, fn(conn, *args)))
        except BaseException as exc:
            if len(batch) == 1:
                outcomes = [(False, exc)]
            else:  # isolate the failing item: each in its own transaction
                outcomes = [self._one(fn, args) for fn, args, _loop, _fut in batch]
        # One wake-up per event loop for the whole batch.
        by_loop: dict = {}
        for (_fn, _args, loop, fut), outcome in zip(batch, outcomes):
            by_loop.setdefault(loop, []).append((fut, outcome))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def _one(self, fn: Callable[..., Any], args: tuple) -> tuple:
        try:
            with self.engine.begin() as conn:
                return True, fn(conn, *args)
        except BaseException as exc:
            return False, exc


def _settle(items: list) -> None:
    for fut, (ok, value) in items:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
