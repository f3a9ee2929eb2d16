"""Study settings and study creation.

``StudySettings`` is what ``Study.settings`` holds; every part (participant app, simulator, analysis)
reads settings through it so defaults live in one place.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from db.models import Study


class StudySettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks_per_participant: int = Field(2, ge=1)
    min_turns: int = Field(2, ge=1, description="user turns before the user may finish")
    max_turns: int = Field(10, ge=1, description="user turns after which the task ends")
    # Who provides the persona in human sessions: the participant fills in the profile
    # questionnaire ("participant"), or the study assigns the condition's profile ("assigned").
    profile_mode: Literal["participant", "assigned"] = "participant"
    interface_language: Literal["en", "zh"] = "en"
    consent_text: str = (
        "You are invited to take part in a research study on conversations with an AI assistant. "
        "Your messages and answers are stored under a random pseudonym and used for research only. "
        "You may stop at any time."
    )
    instructions_text: str = (
        "You will complete a few planning tasks by chatting with an AI assistant. Read each task card, "
        "then talk to the assistant as you naturally would. Under each reply, say whether it contained "
        "made-up information and how satisfied you are."
    )
    completion_code: str = "COMPLETE"
    screenout_code: str = "SCREENOUT"
    prolific_completion_url: Optional[str] = None  # e.g. https://app.prolific.com/submissions/complete?cc=
    idle_timeout_minutes: int = Field(30, ge=1)
    attention_check: bool = True
    quota_per_condition: Optional[int] = None  # human conversations per condition (None = unlimited)


def study_settings(study: Study) -> StudySettings:
    return StudySettings.model_validate(study.settings or {})
