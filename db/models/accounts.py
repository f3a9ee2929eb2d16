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
