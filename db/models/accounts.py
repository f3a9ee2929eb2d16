"""Account tables: staff login sessions, so a reload or a server restart keeps a login."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from db.models.core import time_field


class StaffSession(SQLModel, table=True):
    """One login of an annotator or researcher. Only the SHA-256 of the browser's token is stored."""

    id: int | None = Field(default=None, primary_key=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = time_field(nullable=False, default_now=True)
    expires_at: datetime = time_field(nullable=False, index=True)


class LoginThrottle(SQLModel, table=True):
    """Failed logins of one account name (``account:<name>``) or one client (``client:<address>``),
    counted in the database so every app server sharing it sees them (``workbench.throttle``).
    ``locked_until``: no login with this key is tried before then (a growing delay, then a lock)."""

    key: str = Field(primary_key=True, max_length=300)
    failures: int = Field(default=0)
    locked_until: datetime | None = time_field(nullable=True)
    last_failure: datetime = time_field(nullable=False, default_now=True)
