"""Claims: which worker process is simulating which conversation of a shared run (PostgreSQL),
so that several processes, on one machine or several, work on one run without doing a
conversation twice."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from db.models.core import time_field


class SimulationClaim(SQLModel, table=True):
    """One job of a simulation run (its condition and replicate). ``worker`` is ``host:pid:nonce``
    of the process simulating it (``db.leases.process_owner``), None when nobody is; ``heartbeat_at``
    moves while it works, so a claim of a dead worker is taken over; ``done`` once the conversation
    was closed (completed or failed)."""

    run_id: int = Field(foreign_key="simulationrun.id", primary_key=True)
    condition_id: int = Field(foreign_key="condition.id", primary_key=True)
    replicate: int = Field(primary_key=True)
    worker: str | None = Field(default=None, max_length=200)
    heartbeat_at: datetime | None = time_field()
    done: bool = Field(default=False)
