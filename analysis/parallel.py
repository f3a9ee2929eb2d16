"""Chunked work over a study's conversations in worker processes, with bounded memory.

Large studies (hundreds of thousands of conversations) are processed in chunks of conversation ids;
each chunk is read from the database, computed and handed back by one of ``analysis_workers()``
processes (Python's own ``concurrent.futures.ProcessPoolExecutor``, "spawn" start method: no
inherited database connections or BLAS threads), at most two chunks per worker in flight, so the
parent holds only the small per-conversation results. Small jobs (fewer than
``PARALLEL_MIN_CONVERSATIONS``) and in-memory SQLite databases run in the calling process.

Example::

    for result in map_chunks(compute_chunk, [(url, part) for part in chunks], n_conversations):
        store(result)
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager

ENV_WORKERS = "WORKBENCH_ANALYSIS_WORKERS"
PARALLEL_MIN_CONVERSATIONS = 20_000  # below this, worker start-up (~3 s each) is not worth it

_engines: dict[str, object] = {}


def analysis_workers() -> int:
    """Worker processes for chunked analysis work: ``WORKBENCH_ANALYSIS_WORKERS``, default the CPU
    count (at most 8); 1 runs everything in the calling process."""
    raw = os.environ.get(ENV_WORKERS, "")
    try:
        n = int(raw) if raw else min(8, os.cpu_count() or 1)
    except ValueError:
        from db.errors import UserInputError

        raise UserInputError(f"{ENV_WORKERS} must be a whole number, not {raw!r}") from None
    return max(1, n)


def engine_url(engine) -> str | None:
    """The URL a worker process opens the same database with (None: an in-memory SQLite database,
    which a worker cannot see)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


def worker_engine(url: str):
    """One engine per database URL in this process (workers reuse it across chunks)."""
    if url not in _engines:
        from db.engine import make_engine

        _engines[url] = make_engine(url)
    return _engines[url]


def use_workers(engine, n_conversations: int) -> int:
    """How many worker processes a job over ``n_conversations`` should use (1: in this process)."""
    if engine_url(engine) is None or n_conversations < PARALLEL_MIN_CONVERSATIONS:
        return 1
    return analysis_workers()


@contextmanager
def _plain_main():
    """While worker processes start, ``__main__`` is a blank module.

    A "spawn" worker re-runs the parent's ``__main__`` file first. Inside Streamlit that is the
    page script being run (Streamlit puts it in ``sys.modules["__main__"]``), which would run the
    page in every worker and kill it. The workers only need ``fn``'s own module, so they get an empty
    main. The real one is put back unless something else (another script run) replaced it meanwhile.
    """
    real = sys.modules.get("__main__")
    blank = types.ModuleType("__main__")
    blank.__spec__ = None
    sys.modules["__main__"] = blank
    try:
        yield
    finally:
        if sys.modules.get("__main__") is blank:
            if real is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = real


def map_chunks(fn: Callable, jobs: Iterable[tuple], workers: int) -> Iterator:
    """``fn(*job)`` for every job, in worker processes when ``workers`` > 1 (results in the order
    they finish, at most 2 per worker in flight), else here in order. ``fn`` must be a module-level
    function and its arguments picklable."""
    if workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    import multiprocessing

    pending: set = set()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job in jobs:
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
            with _plain_main():  # workers start inside submit
                pending.add(pool.submit(fn, *job))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
