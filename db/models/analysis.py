"""Analysis tables: the feature store, so text features are computed once per conversation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from db.models.core import json_field, time_field


class ConversationFeatures(SQLModel, table=True):
    """Computed features of one conversation for one feature version (the version names the
    feature code, the analysis language and the spaCy pipelines, so a change recomputes)."""

    __table_args__ = (UniqueConstraint("conversation_id", "version", name="uq_conversationfeatures_version"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    version: str = Field(max_length=200, index=True)
    values: dict = json_field()  # feature name -> number or category
    turns: list | None = json_field(default_factory=list)  # per user turn feature records
    computed_at: datetime = time_field(nullable=False, default_now=True)
