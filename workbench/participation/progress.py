"""A study's live progress for researchers: participants by status, conversations per condition,
dropouts, failed assistant calls and assistant models that cannot answer from this server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session

from db.repo import (
    assistant_failures_df,
    condition_progress_df,
    dropouts_df,
    get_study,
    participants_status_df,
)
from workbench.participation.flow import expire_idle
from workbench.studies import assistant_model_problems


@dataclass
class StudyProgress:
    status: pd.DataFrame  # participants by status
    per_condition: pd.DataFrame  # conversations per condition, user kind and status
    dropouts: pd.DataFrame
    failures: pd.DataFrame  # the latest failed assistant calls, newest first
    model_problems: list[str] = field(default_factory=list)


def study_progress(session: Session, study_name: str) -> StudyProgress:
    """Everything the Progress page shows. Idle sessions are expired first, so they count as
    dropouts as soon as anyone looks."""
    expire_idle(session)
    study_id = get_study(session, study_name).id
    return StudyProgress(
        status=participants_status_df(session, study_id),
        per_condition=condition_progress_df(session, study_id),
        dropouts=dropouts_df(session, study_id),
        failures=assistant_failures_df(session, study_id),
        model_problems=assistant_model_problems(session, study_id),
    )
