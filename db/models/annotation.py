"""Tables of human annotation: annotators' queues and their "person or AI?" guesses.

The labels themselves are ordinary ``Label`` rows of a ``human:<name>`` source; these tables hold
what is specific to people labelling: who gets which conversation in which order (so the work is
resumable and overlap is controlled) and the blind guess about the user's kind.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from db.models.core import text_field, time_field


class AnnotationAssignment(SQLModel, table=True):
    """One conversation in one annotator's queue, at a fixed position."""

    __table_args__ = (
        UniqueConstraint("study_id", "annotator_id", "conversation_id", name="uq_annassign_item"),
        UniqueConstraint("study_id", "annotator_id", "position", name="uq_annassign_position"),
        Index("ix_annassign_study_conv", "study_id", "conversation_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id")
    position: int  # 0-based order in the annotator's queue
    status: str = Field(default="pending", max_length=20)  # pending | done | skipped
    flagged: bool = False  # the annotator flagged the item (broken, offensive, unclear...)
    flag_note: str | None = text_field()
    skip_reason: str | None = text_field()
    batch: str | None = Field(default=None, max_length=60)  # which `annotate assign` call made it
    created_at: datetime = time_field(nullable=False, default_now=True)
    completed_at: datetime | None = time_field()


class HumanityGuess(SQLModel, table=True):
    """An annotator's blind guess: was this conversation's user a person or an AI?"""

    __table_args__ = (UniqueConstraint("annotator_id", "conversation_id", name="uq_humanityguess"),)
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    guess: str = Field(max_length=10)  # human | ai
    confidence: int | None = None  # 1 (pure guess) .. 5 (certain)
    created_at: datetime = time_field(nullable=False, default_now=True)
