"""Transcripts for researchers: a study's conversations, one conversation's turns with the
participant's ratings, and the agent conversations matched to a human one (twins, same condition)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session, select

from db.models import Conversation
from db.repo import conversations_df, get_study
from workbench.participation.flow import TurnView, conversation_turns

TRANSCRIPT_COLUMNS = [
    "conversation_id",
    "user_kind",
    "scenario",
    "condition_key",
    "participant",
    "simulator",
    "status",
    "n_turns",
    "started_at",
]


def transcripts_df(
    session: Session,
    study_name: str,
    scenario: str | None = None,
    user_kind: str | None = None,
    condition: str | None = None,
) -> pd.DataFrame:
    """The study's conversations (``TRANSCRIPT_COLUMNS``), only those of the given scenario, user kind
    and condition key where these are given."""
    study = get_study(session, study_name)
    df = conversations_df(session, study.id)[TRANSCRIPT_COLUMNS]
    return filter_transcripts(df, scenario=scenario, user_kind=user_kind, condition=condition)


def filter_transcripts(
    df: pd.DataFrame,
    scenario: str | None = None,
    user_kind: str | None = None,
    condition: str | None = None,
) -> pd.DataFrame:
    """The rows of a ``transcripts_df`` frame that match every filter given (None: no filter)."""
    if scenario:
        df = df[df["scenario"] == scenario]
    if user_kind:
        df = df[df["user_kind"] == user_kind]
    if condition:
        df = df[df["condition_key"] == condition]
    return df.reset_index(drop=True)


def transcript(session: Session, conversation_id: int) -> list[TurnView]:
    """The conversation's turns with the participant's ratings of each reply."""
    return [
        TurnView(
            t.index, t.role, t.content, t.hallucination, t.satisfaction, t.satisfaction_reason, t.created_at
        )
        for t in conversation_turns(session, conversation_id)
    ]


def matched_conversations(session: Session, conversation_id: int) -> list[int]:
    """Agent conversations matched to a human one: its digital twins, or those under the same condition."""
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        return []
    twins = session.exec(
        select(Conversation.id).where(Conversation.twin_of_id == conversation_id).order_by(Conversation.id)
    ).all()
    same = session.exec(
        select(Conversation.id)
        .where(Conversation.condition_id == conv.condition_id, Conversation.user_kind != conv.user_kind)
        .order_by(Conversation.id)
    ).all()
    return list(dict.fromkeys([*twins, *same]))


@dataclass
class Comparison:
    """A conversation beside its first matched conversations, as the Transcripts page shows them."""

    conversation_id: int
    turns: list[TurnView]
    matched: list[int] = field(default_factory=list)  # every matched conversation, in order
    matched_turns: dict[int, list[TurnView]] = field(default_factory=dict)  # the first ``shown``


def comparison(session: Session, conversation_id: int, shown: int = 2) -> Comparison:
    """The conversation's turns, its matched conversations and the turns of the first ``shown``."""
    matched = matched_conversations(session, conversation_id)
    return Comparison(
        conversation_id=conversation_id,
        turns=transcript(session, conversation_id),
        matched=matched,
        matched_turns={other: transcript(session, other) for other in matched[:shown]},
    )
