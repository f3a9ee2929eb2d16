"""Several worker processes on one simulation run (PostgreSQL).

Every job of a shared run (a condition and a replicate) has a ``SimulationClaim`` row. A worker
takes the next open job with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two workers asking at once get
different rows, neither waits for the other), writes its name and a heartbeat on it, and releases it
in the transaction that closes the conversation. A claim whose worker is gone (its process is dead
on this machine, or it has not beaten for ``CLAIM_TIMEOUT``) is open again, so the job is started
again by another worker (from the beginning; the response cache makes the replayed calls free).

On SQLite, which has no row locks, a run keeps one process (``runner.claim_run``).

Example (in a worker's transaction)::

    key = claim_next(conn, run_id, me, live_others=set())  # (condition_id, replicate) or None
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from db.leases import owner_alive
from db.models import Conversation
from db.models.claims import SimulationClaim
from db.types import utcnow

# A worker on another machine counts as gone after this long without a heartbeat; one on this
# machine as soon as its process is gone. Workers beat every CLAIM_BEAT_SECONDS.
CLAIM_TIMEOUT = timedelta(seconds=60)
CLAIM_BEAT_SECONDS = 10.0
_CLAIM = SimulationClaim.__table__
_CONV = Conversation.__table__


def shares_runs(engine: Engine) -> bool:
    """Whether several processes can work on one run (the database has row locks)."""
    return engine.dialect.name == "postgresql"


def seed_claims(engine: Engine, run_id: int, jobs: Iterable[tuple[int, int]], reopen: set) -> None:
    """One claim row per job of the run (existing ones kept); ``reopen``: jobs done earlier that this
    invocation runs again (failed ones with retry_failed), unless a live worker holds them."""
    rows = [dict(run_id=run_id, condition_id=c, replicate=r, done=False) for c, r in jobs]
    with engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(pg_insert(_CLAIM).values(rows[i : i + 1000]).on_conflict_do_nothing())
        if reopen:
            conn.execute(
                update(_CLAIM)
                .where(
                    _CLAIM.c.run_id == run_id,
                    _CLAIM.c.worker.is_(None),
                    tuple_(_CLAIM.c.condition_id, _CLAIM.c.replicate).in_(sorted(reopen)),
                )
                .values(done=False)
            )


def dead_workers(conn: Connection, run_id: int, me: str) -> list[str]:
    """The workers holding claims of the run that are gone (their claims may be taken over)."""
    rows = conn.execute(
        select(_CLAIM.c.worker, func.max(_CLAIM.c.heartbeat_at))
        .where(_CLAIM.c.run_id == run_id, _CLAIM.c.worker.is_not(None), _CLAIM.c.worker != me)
        .group_by(_CLAIM.c.worker)
    ).all()
    now = utcnow()
    return [w for w, beat in rows if not _alive(w, beat, now)]


def _alive(worker: str, beat: Any, now: Any) -> bool:
    if beat is None or now - beat >= CLAIM_TIMEOUT:
        return False
    return owner_alive(worker, beat)  # on this machine: is the process still there


def claim_next(
    conn: Connection, run_id: int, me: str, conditions: Iterable[int], max_replicate: int
) -> tuple[int, int] | None:
    """Claim the first open job of the run for ``me``: not done, and nobody's or a dead worker's,
    among ``me``'s jobs (a process asked for fewer replicates leaves the others to the rest)."""
    now = utcnow()
    free = or_(_CLAIM.c.worker.is_(None), _CLAIM.c.heartbeat_at < now - CLAIM_TIMEOUT)
    dead = dead_workers(conn, run_id, me)
    if dead:
        free = or_(free, _CLAIM.c.worker.in_(dead))
    row = conn.execute(
        select(_CLAIM.c.condition_id, _CLAIM.c.replicate)
        .where(
            _CLAIM.c.run_id == run_id,
            _CLAIM.c.done.is_(False),
            _CLAIM.c.condition_id.in_(sorted(set(conditions))),
            _CLAIM.c.replicate <= max_replicate,
            free,
        )
        .order_by(_CLAIM.c.condition_id, _CLAIM.c.replicate)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None:
        return None
    conn.execute(update(_CLAIM).where(_key(run_id, row[0], row[1])).values(worker=me, heartbeat_at=now))
    return row[0], row[1]


def prior_conversation(conn: Connection, run_id: int, key: tuple[int, int]) -> tuple[int, str] | None:
    """(id, status) of the job's conversation, written by any worker, or None."""
    row = conn.execute(
        select(_CONV.c.id, _CONV.c.status).where(
            _CONV.c.run_id == run_id, _CONV.c.condition_id == key[0], _CONV.c.replicate == key[1]
        )
    ).first()
    return (row[0], row[1]) if row else None


def release_claim(conn: Connection, run_id: int, key: tuple[int, int], me: str, done: bool) -> None:
    """Give the job back (``done``: its conversation was closed for good in this transaction)."""
    conn.execute(
        update(_CLAIM)
        .where(_key(run_id, *key), _CLAIM.c.worker == me)
        .values(worker=None, heartbeat_at=utcnow(), done=done)
    )


def beat(engine: Engine, run_id: int, me: str) -> None:
    """Move the heartbeat of ``me``'s claims."""
    with engine.begin() as conn:
        conn.execute(
            update(_CLAIM)
            .where(_CLAIM.c.run_id == run_id, _CLAIM.c.worker == me)
            .values(heartbeat_at=utcnow())
        )


def release_all(engine: Engine, run_id: int, me: str) -> int:
    """Drop ``me``'s remaining claims (not done: another worker may run them); how many live
    claims other workers still hold."""
    with engine.begin() as conn:
        conn.execute(
            update(_CLAIM).where(_CLAIM.c.run_id == run_id, _CLAIM.c.worker == me).values(worker=None)
        )
        dead = set(dead_workers(conn, run_id, me))
        others = conn.execute(
            select(_CLAIM.c.worker).where(_CLAIM.c.run_id == run_id, _CLAIM.c.worker.is_not(None))
        ).all()
    return sum(1 for (w,) in others if w not in dead)


def completed_count(conn: Connection, run_id: int) -> int:
    """Conversations of the run completed, by all workers."""
    return conn.execute(
        select(func.count()).where(_CONV.c.run_id == run_id, _CONV.c.status == "completed")
    ).scalar_one()


def _key(run_id: int, condition_id: int, replicate: int) -> Any:
    return and_(
        _CLAIM.c.run_id == run_id,
        _CLAIM.c.condition_id == condition_id,
        _CLAIM.c.replicate == replicate,
    )
