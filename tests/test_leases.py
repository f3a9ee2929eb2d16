"""db.leases: one process per long job, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from db.errors import UserInputError
from db.leases import SILENCE, acquire, heartbeat, lease, owner_alive, process_owner, release
from db.models.leases import Lease
from db.types import utcnow


def _rows(engine):
    with Session(engine) as s:
        return {r.key: r.owner for r in s.exec(select(Lease)).all()}


def test_acquire_refuse_takeover_release(engine):
    me, here = process_owner(), socket.gethostname()
    acquire(engine, "job", me, "job x")
    acquire(engine, "job", me, "job x")  # the holder asking again keeps it
    assert _rows(engine) == {"job": me}
    # A live process on this machine holds it: refused, naming it.
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Session(engine) as s:
            row = s.get(Lease, "job")
            row.owner = f"{here}:{alive.pid}:abc"
            s.add(row)
            s.commit()
        with pytest.raises(
            UserInputError, match=f"job x is already running in another process \\(pid {alive.pid}"
        ):
            acquire(engine, "job", me, "job x")
    finally:
        alive.kill()
        alive.wait()
    acquire(engine, "job", me, "job x")  # killed: taken over at once
    assert _rows(engine) == {"job": me}
    heartbeat(engine, "job", me)
    release(engine, "job", "someone else")  # only the holder releases
    assert _rows(engine) == {"job": me}
    release(engine, "job", me)
    assert _rows(engine) == {}
    with lease(engine, "job", me, "job x"):
        assert _rows(engine) == {"job": me}
    assert _rows(engine) == {}
    with pytest.raises(RuntimeError), lease(engine, "job", me, "job x"):
        raise RuntimeError("boom")
    assert _rows(engine) == {}  # released on errors too


def test_holder_on_another_machine_counts_until_silent(engine):
    now = utcnow()
    assert owner_alive("elsewhere.example:1:abc", now)
    assert not owner_alive("elsewhere.example:1:abc", now - SILENCE - timedelta(seconds=1))
    acquire(engine, "job", "elsewhere.example:123:abc", "job x")
    with pytest.raises(UserInputError, match="pid 123 on elsewhere.example"):
        acquire(engine, "job", process_owner(), "job x")
    with Session(engine) as s:
        row = s.get(Lease, "job")
        row.heartbeat_at = utcnow() - SILENCE - timedelta(minutes=1)
        s.add(row)
        s.commit()
    me = process_owner()
    acquire(engine, "job", me, "job x")
    assert _rows(engine) == {"job": me}


def test_two_processes_at_once_exactly_one_wins(engine):
    """Threads stand in for processes (each has its own owner string and connection)."""
    owners = [process_owner() for _ in range(6)]
    won, refused = [], []
    barrier = threading.Barrier(len(owners))

    def go(me):
        barrier.wait()
        try:
            acquire(engine, "job", me, "job x")
            won.append(me)
        except UserInputError:
            refused.append(me)

    threads = [threading.Thread(target=go, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == len(owners) - 1
    assert _rows(engine) == {"job": won[0]}
