"""The study data model: the tables every part of the workbench shares.

A *Condition* (scenario + task context + profile + assistant config + language) is the unit both
user kinds are run under; a Conversation records which kind of user (``human`` or ``agent``) talked
to the assistant under it. Labels point at conversations (or one of their turns) and name their
LabelSource, so human, imported, LLM, rule-based and trained labels live side by side.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from db.types import JSONType, UTCDateTime, utcnow


def json_field(default_factory=dict, **kw) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSONType, nullable=True), **kw)


def time_field(nullable: bool = True, default_now: bool = False, index: bool = False) -> Any:
    if default_now:
        return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def text_field(nullable: bool = True, default: str | None = None) -> Any:
    if nullable:
        return Field(default=default, sa_column=Column(Text, nullable=True))
    return Field(default=default if default is not None else "", sa_column=Column(Text, nullable=False))


# --------------------------------------------------------------------------------------------------
# Study design
# --------------------------------------------------------------------------------------------------


class Study(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    description: str | None = text_field()
    language: str = Field(default="en", max_length=8)
    # Free-form study settings: tasks_per_participant, min_turns, max_turns, consent/instruction
    # texts, completion and screen-out codes, idle timeout, profile mode... (see workbench.studies)
    settings: dict = json_field()
    source: str = Field(default="created", max_length=40)  # created | imported
    created_at: datetime = time_field(nullable=False, default_now=True)


class Scenario(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True, max_length=100)  # e.g. "travel_planning"
    name: str = Field(max_length=200)
    names: dict = json_field()  # language -> display name, e.g. {"zh": "旅行规划"}
    description: str | None = text_field()
    aspects: list = json_field(default_factory=list)  # aspects for the order dimension
    pack: str | None = Field(default=None, max_length=200)  # file the scenario came from
    version: str = Field(default="1", max_length=40)


class TaskContext(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("scenario_id", "key", name="uq_taskcontext_scenario_key"),)
    id: int | None = Field(default=None, primary_key=True)
    scenario_id: int = Field(foreign_key="scenario.id", index=True)
    key: str = Field(max_length=200)  # stable id within the scenario, e.g. "en-7"
    language: str = Field(default="en", max_length=8)
    text: str = text_field(nullable=False)
    translations: dict = json_field()  # language -> text
    slots: dict = json_field()  # slot values that generated this context
    source: str = Field(default="pack", max_length=40)  # pack | imported | custom


class Profile(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True, max_length=200)  # e.g. "pool-75", "participant-<pseudonym>"
    language: str = Field(default="en", max_length=8)
    # Structured persona: gender, age, personality, occupation, daily_interests, travel_habits,
    # dining_preferences, spending_habits, other_aspects (lists or strings).
    fields: dict = json_field()
    text: str | None = text_field()  # free-text persona as given to a simulator
    translations: dict = json_field()  # language -> free text
    source: str = Field(default="pool", max_length=40)  # pool | participant | imported


class AssistantConfig(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # Identical configs are shared: fingerprint = hash of the fields below.
    fingerprint: str = Field(index=True, unique=True, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    model: str = Field(max_length=200)  # "provider/model"
    system_prompt: str | None = text_field()
    temperature: float | None = None
    max_tokens: int | None = None
    version: str = Field(default="1", max_length=40)
    params: dict = json_field()
    created_at: datetime = time_field(nullable=False, default_now=True)


class SimulatorConfig(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, unique=True, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    model: str = Field(max_length=200)
    prompt_template: str | None = Field(default=None, max_length=200)  # template name
    prompt_version: str = Field(default="1", max_length=40)
    temperature: float | None = None
    seed: int | None = None
    params: dict = json_field()  # min/max turns, goal reminders, other options
    created_at: datetime = time_field(nullable=False, default_now=True)


class Condition(SQLModel, table=True):
    """Scenario + task context + profile + assistant config + language, within one study."""

    __table_args__ = (UniqueConstraint("study_id", "key", name="uq_condition_study_key"),)
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    key: str = Field(max_length=300)  # stable, human-readable id within the study
    scenario_id: int = Field(foreign_key="scenario.id", index=True)
    task_context_id: int = Field(foreign_key="taskcontext.id", index=True)
    profile_id: int | None = Field(default=None, foreign_key="profile.id", index=True)
    assistant_config_id: int = Field(foreign_key="assistantconfig.id", index=True)
    language: str = Field(default="en", max_length=8)
    quota: int | None = None  # max human conversations (None = unlimited)
    created_at: datetime = time_field(nullable=False, default_now=True)


# --------------------------------------------------------------------------------------------------
# People and runs
# --------------------------------------------------------------------------------------------------


class Participant(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("study_id", "external_source", "external_id", name="uq_participant_external"),
    )
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    pseudonym: str = Field(index=True, unique=True, max_length=64)  # random; what analysis sees
    # External ids (Prolific PID, imported user folder) are kept apart from the pseudonym.
    external_source: str | None = Field(default=None, max_length=40)  # prolific | invite | imported
    external_id: str | None = Field(default=None, max_length=200)
    external_session: str | None = Field(default=None, max_length=200)
    invite_token_hash: str | None = Field(default=None, index=True, max_length=128)
    status: str = Field(default="invited", max_length=40)
    profile_id: int | None = Field(default=None, foreign_key="profile.id")
    language: str = Field(default="en", max_length=8)
    state: dict = json_field()  # where the participant is in the flow
    created_at: datetime = time_field(nullable=False, default_now=True)
    last_seen_at: datetime | None = time_field()
    completed_at: datetime | None = time_field()


class Assignment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("participant_id", "position", name="uq_assignment_position"),)
    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    condition_id: int = Field(foreign_key="condition.id", index=True)
    position: int
    status: str = Field(default="assigned", max_length=40)  # assigned | in_progress | completed | released
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id")
    created_at: datetime = time_field(nullable=False, default_now=True)


class SimulationRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    # Identifies the run so that re-running the same command resumes it.
    key: str = Field(index=True, unique=True, max_length=64)
    simulator_config_id: int = Field(foreign_key="simulatorconfig.id")
    assistant_config_id: int | None = Field(default=None, foreign_key="assistantconfig.id")
    params: dict = json_field()
    status: str = Field(default="running", max_length=40)
    created_at: datetime = time_field(nullable=False, default_now=True)
    finished_at: datetime | None = time_field()
    # The process working on the run ("host:pid:nonce"), None when none is; a second process on the
    # same run is refused while the owner is alive (workbench.simulation.runner.claim_run).
    owner: str | None = Field(default=None, max_length=200)
    heartbeat_at: datetime | None = time_field()


# Conversations that are not (yet) a whole conversation: still going on, failed, or stopped by a
# simulation budget. Labellers, annotation queues and the analysis leave them out.
UNFINISHED_STATUSES = ("in_progress", "failed", "stopped")


class Conversation(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("run_id", "condition_id", "replicate", name="uq_conversation_run_replicate"),
        UniqueConstraint("study_id", "external_id", name="uq_conversation_external"),
        Index("ix_conversation_study_kind", "study_id", "user_kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    condition_id: int = Field(foreign_key="condition.id", index=True)
    user_kind: str = Field(max_length=10)  # human | agent
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    simulator_config_id: int | None = Field(default=None, foreign_key="simulatorconfig.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="simulationrun.id", index=True)
    replicate: int = 0
    twin_of_id: int | None = Field(default=None, foreign_key="conversation.id")  # digital twin
    status: str = Field(
        default="in_progress", max_length=20
    )  # in_progress | completed | abandoned | failed | stopped
    language: str = Field(default="en", max_length=8)
    started_at: datetime | None = time_field(default_now=True)
    ended_at: datetime | None = time_field()
    end_reason: str | None = Field(default=None, max_length=60)  # user_ended | max_turns | ...
    ended_by: str | None = Field(default=None, max_length=20)  # user | assistant | system
    error: str | None = text_field()
    prompt_version: str | None = Field(default=None, max_length=40)
    source: str = Field(default="collected", max_length=40)  # collected | simulated | imported
    external_id: str | None = Field(default=None, max_length=500)  # e.g. import path
    wave: str | None = Field(default=None, max_length=60)
    meta: dict = json_field()


class Turn(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "index", name="uq_turn_index"),)
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    index: int
    role: str = Field(max_length=20)  # user | assistant | system
    content: str = text_field(nullable=False)
    translation: str | None = text_field()
    translation_language: str | None = Field(default=None, max_length=8)
    created_at: datetime | None = time_field(default_now=True)  # started / sent
    completed_at: datetime | None = time_field()  # reply finished
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Live per-turn judgements by the user on assistant turns:
    hallucination: str | None = Field(default=None, max_length=20)  # yes | no | cant_tell
    hallucination_note: str | None = text_field()
    satisfaction: int | None = None  # 1-5
    satisfaction_reason: str | None = text_field()
    intent: list | None = json_field(default_factory=lambda: None)
    llm_call_id: int | None = Field(default=None, foreign_key="llmcall.id")
    meta: dict = json_field()


class QuestionnaireResponse(SQLModel, table=True):
    """One answer to one item; tidy so questionnaires of any shape fit."""

    id: int | None = Field(default=None, primary_key=True)
    study_id: int | None = Field(default=None, foreign_key="study.id", index=True)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    # post_task | profile | attention_check | agent_rating | agent_self_report | ...
    questionnaire: str = Field(max_length=60)
    item: str = Field(max_length=200)
    value: str | None = text_field()  # normalised value (e.g. "yes", "very_useful", "4")
    raw_value: str | None = text_field()  # as answered / as found in the source
    question: str | None = text_field()
    created_at: datetime = time_field(nullable=False, default_now=True)


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


class Annotator(SQLModel, table=True):
    """A person who logs in: annotators label, researchers run studies."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    role: str = Field(default="annotator", max_length=20)  # annotator | researcher
    password_hash: str | None = Field(default=None, max_length=200)
    active: bool = True
    created_at: datetime = time_field(nullable=False, default_now=True)


class LabelSource(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # CLI name, e.g. "human:alice", "llm:openai/gpt-4o:v1", "imported:recllmsim-gpt4o"
    name: str = Field(index=True, unique=True, max_length=300)
    kind: str = Field(max_length=20)  # human | llm | imported | rule | trained | adjudicated
    annotator_id: int | None = Field(default=None, foreign_key="annotator.id")
    model: str | None = Field(default=None, max_length=200)
    prompt_version: str | None = Field(default=None, max_length=40)
    codebook_version: str | None = Field(default=None, max_length=40)
    # What the source stands for, for choosing defaults: e.g. {"gold": true, "human": true}
    params: dict = json_field()
    created_at: datetime = time_field(nullable=False, default_now=True)


class Label(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("source_id", "conversation_id", "dimension", "turn_index", name="uq_label"),
        Index("ix_label_dimension_source", "dimension", "source_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    turn_index: int = -1  # -1 for conversation-level labels, else Turn.index
    turn_id: int | None = Field(default=None, foreign_key="turn.id")
    dimension: str = Field(max_length=100)
    value: str | None = Field(default=None, max_length=200)  # label as in the codebook ("AllInOne", "4")
    source_id: int = Field(foreign_key="labelsource.id", index=True)
    rationale: str | None = text_field()
    samples: list | None = json_field(default_factory=lambda: None)  # per-sample values (LLM)
    flagged: bool = False  # samples disagreed / annotator flagged
    status: str = Field(default="ok", max_length=20)  # ok | skipped | failed
    created_at: datetime = time_field(nullable=False, default_now=True)


class LLMCall(SQLModel, table=True):
    """Every real model call, with what is needed to trace and price it. Never an API key."""

    # A shared simulation run's workers read its spend and last minute's calls (runner._SharedBatch).
    __table_args__ = (Index("ix_llmcall_run_created", "run_id", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=40)
    model: str = Field(max_length=200)
    purpose: str = Field(max_length=40, index=True)  # assistant | simulator | labeller | ...
    params: dict = json_field()
    messages: list | None = json_field(default_factory=list)
    response: str | None = text_field()
    raw: dict | None = json_field(default_factory=lambda: None)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    error: str | None = text_field()
    cache_key: str | None = Field(default=None, max_length=64, index=True)
    cache_hit: bool = False
    prompt_version: str | None = Field(default=None, max_length=40)
    study_id: int | None = Field(default=None, foreign_key="study.id", index=True)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="simulationrun.id")
    created_at: datetime = time_field(nullable=False, default_now=True)
