"""Shared parts of the analysis benchmarks: a generated study on SQLite (cached) or PostgreSQL, and
the figures of one measured phase (wall, CPU and peak memory of the process and its workers).

The generated SQLite database is cached under ``--cache`` (default /tmp/workbench_bench) per size,
because generating a million conversations takes a while; each measured run works on a fresh copy,
so features are computed cold. ``--db-url pg`` starts a throw-away PostgreSQL cluster
(``tests/pg.py``) and generates the study into it.
"""

from __future__ import annotations

import os
import resource
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("/tmp/workbench_bench")


def generate(url: str, n: int) -> dict:
    """Generate the "bench" study of ``n`` conversations (3 simulators) into ``url``."""
    from analysis.synthetic import make_study
    from db.engine import make_engine
    from db.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    make_study(
        engine,
        "bench",
        n_human=n // 2,
        n_agent=n - n // 2,
        n_participants=max(2, n // 50),
        simulators=3,
        seed=0,
    )
    return {"generate_s": round(time.perf_counter() - t, 1)}


def _tree_rss_kb(pid: int) -> int:
    """Resident memory (kB) of a process and all its descendants, from /proc (0 where unreadable)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


@contextmanager
def measured(figures: dict):
    """Fill ``figures`` with peak_rss_mb (this process plus its worker processes, sampled every
    0.2 s), max_rss_mb (this process alone), cpu_s (this process and its finished children) and the
    1-minute load average before and after. (``RUSAGE_CHILDREN``'s max RSS is no use for workers:
    a spawned child counts the parent's pages it had between fork and exec.)"""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _tree_rss_kb(os.getpid()))

    thread = threading.Thread(target=sample, daemon=True)
    load_before = os.getloadavg()[0]
    thread.start()
    try:
        yield figures
    finally:
        stop.set()
        thread.join()
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        figures.update(
            peak_rss_mb=round(max(peak[0], me.ru_maxrss) / 1024),
            max_rss_mb=round(me.ru_maxrss / 1024),
            cpu_s=round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1),
            load_before=round(load_before, 1),
            load_after=round(os.getloadavg()[0], 1),
        )


@contextmanager
def synthetic_database(n: int, db_url: str | None, cache: Path, run_phase):
    """The URL of a database holding the "bench" study of ``n`` conversations, features not yet
    computed. ``db_url`` None: a copy of the cached SQLite file (generated first when missing);
    "pg": a throw-away PostgreSQL cluster; anything else: that database (generated into when it
    has no "bench" study; features already stored there are reused). ``run_phase(name, *args)``
    runs a phase in a child process."""
    if db_url == "pg":
        sys_path_tests = str(ROOT)
        import sys

        if sys_path_tests not in sys.path:
            sys.path.insert(0, sys_path_tests)
        from tests.pg import ThrowawayCluster

        cluster = ThrowawayCluster()
        cluster.start()
        try:
            url = cluster.create_database()
            print(f"  generate ({n:,} into PostgreSQL):", run_phase("generate", url, str(n)), flush=True)
            yield url
        finally:
            cluster.stop()
        return
    if db_url:
        if not _has_bench_study(db_url):
            print(f"  generate ({n:,}):", run_phase("generate", db_url, str(n)), flush=True)
        yield db_url
        return
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"synthetic_{n}.db"
    if not cached.exists():
        partial = cache / f"synthetic_{n}.db.partial"
        for p in partial.parent.glob(partial.name + "*"):
            p.unlink()
        print(
            f"  generate ({n:,}, cached as {cached}):", run_phase("generate", f"sqlite:///{partial}", str(n))
        )
        _checkpoint(partial)
        partial.rename(cached)
    else:
        print(f"  generated study from the cache: {cached}", flush=True)
    work = cache / f"work_{n}_{os.getpid()}.db"
    shutil.copyfile(cached, work)
    try:
        yield f"sqlite:///{work}"
    finally:
        for p in work.parent.glob(work.name + "*"):
            p.unlink()


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the SQLite file, so the file alone is the whole database."""
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()


def _has_bench_study(url: str) -> bool:
    from sqlalchemy import inspect, text

    from db.engine import make_engine

    engine = make_engine(url)
    if "study" not in inspect(engine).get_table_names():
        return False
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM study WHERE name = 'bench'")).first() is not None
