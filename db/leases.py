"""One process per long job.

A job (LLM labelling of a study by one source; simulation runs keep their owner on the run row
instead, ``workbench.simulation.runner.claim_run``) is held by a ``Lease`` row. A second process
asking for the same job is refused with a one-line ``UserInputError`` while the holder is alive:
on this machine its process id is checked, so a killed holder is taken over at once; a holder on
another machine counts as gone after ``SILENCE`` without a heartbeat. Taking over is one
conditional UPDATE (and creating one INSERT on the primary key), so of two processes asking at
once exactly one wins.

Example::

    me = process_owner()
    with lease(engine, f"label:{study_id}:{source}", me, what="labelling of study 'x' by 'y'"):
        ...  # call heartbeat(engine, key, me) now and then
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from db.errors import UserInputError
from db.models.leases import Lease
from db.types import utcnow

# A holder on another machine counts as gone after this long without a heartbeat.
SILENCE = timedelta(minutes=10)
_LEASE = Lease.__table__


def process_owner() -> str:
    """``host:pid:nonce``: this process (the nonce tells two jobs of one process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str, latest_activity: datetime | None) -> bool:
    """Whether the process ``owner`` may still be working: on this machine, whether its process
    exists; elsewhere, whether ``latest_activity`` is younger than ``SILENCE``."""
    host, pid, _nonce = owner.rsplit(":", 2)
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False  # killed or crashed: the job can be resumed at once
        except (PermissionError, ValueError):
            return True
        return True
    return latest_activity is not None and utcnow() - latest_activity < SILENCE


def _busy(what: str, owner: str) -> UserInputError:
    host, pid, _ = owner.rsplit(":", 2)
    return UserInputError(
        f"{what} is already running in another process (pid {pid} on {host}); wait for it to finish, "
        "or stop that process and run the same command again to resume"
    )


def acquire(engine: Engine, key: str, me: str, what: str) -> None:
    """Hold the job ``key`` as ``me`` or raise UserInputError naming the live holder."""
    now = utcnow()
    try:
        with engine.begin() as conn:
            conn.execute(insert(_LEASE).values(key=key, owner=me, started_at=now, heartbeat_at=now))
        return
    except IntegrityError:
        pass  # held, or left behind by a process that died
    with engine.begin() as conn:
        row = conn.execute(select(_LEASE.c.owner, _LEASE.c.heartbeat_at).where(_LEASE.c.key == key)).first()
        if row is None:  # released in between: ask again
            conn.execute(insert(_LEASE).values(key=key, owner=me, started_at=now, heartbeat_at=now))
            return
        owner, beat = row
        if owner != me and owner_alive(owner, beat):
            raise _busy(what, owner)
        taken = conn.execute(
            update(_LEASE)
            .where(_LEASE.c.key == key, _LEASE.c.owner == owner)
            .values(owner=me, started_at=now, heartbeat_at=now)
        ).rowcount
    if taken != 1:
        raise UserInputError(f"{what} was just started by another process; wait for it to finish")


def heartbeat(engine: Engine, key: str, me: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(_LEASE).where(_LEASE.c.key == key, _LEASE.c.owner == me).values(heartbeat_at=utcnow())
        )


def release(engine: Engine, key: str, me: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(_LEASE).where(_LEASE.c.key == key, _LEASE.c.owner == me))


@contextmanager
def lease(engine: Engine, key: str, me: str, what: str) -> Iterator[None]:
    """``acquire`` for the block, ``release`` after it (also on errors; a killed process leaves a
    row that the next ``acquire`` takes over)."""
    acquire(engine, key, me, what)
    try:
        yield
    finally:
        try:
            release(engine, key, me)
        except Exception:  # the database went away: the row is taken over on the next start
            pass
