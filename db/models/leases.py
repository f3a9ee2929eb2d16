"""Leases: which process is working on a long job (e.g. LLM labelling of a study by one source),
so that a second process on the same job is refused instead of repeating the first one's paid calls."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from db.models.core import time_field


class Lease(SQLModel, table=True):
    """One running job. ``key`` names the job (``label:<study id>:<source>``); ``owner`` is
    ``host:pid:nonce`` of the process (``db.leases.process_owner``); ``heartbeat_at`` moves while it
    works. The row is deleted when the job ends; a row left by a killed process is taken over."""

    key: str = Field(primary_key=True, max_length=300)
    owner: str = Field(max_length=200)
    started_at: datetime = time_field(nullable=False, default_now=True)
    heartbeat_at: datetime = time_field(nullable=False, default_now=True)
