"""A study's live progress for researchers: participants by status, every condition's coverage by user kind,
dropouts, failed assistant calls and assistant models that cannot answer from this server."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session

from db.repo import (
    assistant_failures_df,
    condition_coverage_df,
    dropouts_df,
    get_study,
    participants_status_df,
)
from workbench.participation.flow import expire_idle
from workbench.studies import assistant_model_problems


@dataclass
class StudyProgress:
    status: pd.DataFrame  # participants by status
    coverage: pd.DataFrame  # every designed condition with its conversations by user kind
    dropouts: pd.DataFrame
    failures: pd.DataFrame  # the latest failed assistant calls, newest first
    model_problems: list[str] = field(default_factory=list)

    def coverage_note(self) -> str:
        """One line on the conditions without a completed conversation of a user kind."""
        cov = self.coverage["coverage"]
        if cov.empty:
            return "This study has no conditions yet."
        no_human = int((~cov.isin(["human and agent", "human only"])).sum())
        no_agent = int((~cov.isin(["human and agent", "agent only"])).sum())
        if not no_human and not no_agent:
            return f"All {len(cov)} conditions have completed human and agent conversations."
        return (
            f"Of {len(cov)} conditions, {no_human} have no completed human conversation and "
            f"{no_agent} no completed agent one (coverage: none, human only or agent only)."
        )


def study_progress(session: Session, study_name: str) -> StudyProgress:
    """Everything the Progress page shows. Idle sessions are expired first, so they count as
    dropouts as soon as anyone looks."""
    expire_idle(session)
    study_id = get_study(session, study_name).id
    return StudyProgress(
        status=participants_status_df(session, study_id),
        coverage=condition_coverage_df(session, study_id),
        dropouts=dropouts_df(session, study_id),
        failures=assistant_failures_df(session, study_id),
        model_problems=assistant_model_problems(session, study_id),
    )
