"""Repository functions shared by every area: look-ups, get-or-create, tidy DataFrames.

All take an open ``Session`` so callers decide the transaction. DataFrame builders end in ``_df``
and return stable column sets (empty frames keep their columns).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pandas as pd
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db.errors import NotFoundError
from db.frames import read_frame
from db.models import (
    Assignment,
    AssistantConfig,
    Condition,
    Conversation,
    Label,
    LabelSource,
    LLMCall,
    Participant,
    Profile,
    QuestionnaireResponse,
    Scenario,
    SimulationRun,
    SimulatorConfig,
    Study,
    TaskContext,
    Turn,
)


def fingerprint(**fields: Any) -> str:
    """Stable hash of a config's defining fields (used to share identical configs)."""
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def get_study(session: Session, name: str) -> Study:
    study = session.exec(select(Study).where(Study.name == name)).first()
    if study is None:
        names = session.exec(select(Study.name).order_by(Study.name)).all()
        known = ", ".join(names) if names else "none yet"
        raise NotFoundError(f"no study named {name!r} (studies: {known})")
    return study


def get_or_create_assistant_config(
    session: Session,
    model: str,
    system_prompt: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    version: str = "1",
    params: dict | None = None,
    name: str | None = None,
) -> AssistantConfig:
    params = params or {}
    fp = fingerprint(
        model=model,
        system_prompt=system_prompt,
        temperature=temperature,
        max_tokens=max_tokens,
        version=version,
        params=params,
    )
    return _get_or_insert(
        session,
        AssistantConfig,
        fp,
        lambda: AssistantConfig(
            fingerprint=fp,
            model=model,
            system_prompt=system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            version=version,
            params=params,
            name=name or model,
        ),
    )


def _get_or_insert(session: Session, model_cls, fp: str, make):
    """The row with fingerprint ``fp``, inserted by ``make()`` when missing. Two processes may insert
    the same one at once (two simulations starting together): the loser of the unique index takes
    the winner's row (the insert runs in a savepoint, so the caller's transaction goes on)."""
    row = session.exec(select(model_cls).where(model_cls.fingerprint == fp)).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = make()
            session.add(row)
    except IntegrityError:
        row = session.exec(select(model_cls).where(model_cls.fingerprint == fp)).one()
    return row


def data_version(session: Session, study_id: int) -> tuple:
    """A cheap fingerprint of a study's data (conversations per status, turns, labels: counts and
    latest ids) for caches: it changes when a conversation, turn or label is added or a conversation
    changes status."""
    conv = session.exec(
        select(Conversation.status, func.count(Conversation.id), func.max(Conversation.id))
        .where(Conversation.study_id == study_id)
        .group_by(Conversation.status)
    ).all()
    turns = session.exec(
        select(func.count(Turn.id), func.max(Turn.id))
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.study_id == study_id)
    ).one()
    labels = session.exec(
        select(func.count(Label.id), func.max(Label.id), func.max(Label.created_at))
        .join(Conversation, Conversation.id == Label.conversation_id)
        .where(Conversation.study_id == study_id)
    ).one()
    return (tuple(sorted(map(tuple, conv))), tuple(turns), tuple(str(v) for v in labels))


def get_or_create_simulator_config(
    session: Session,
    model: str,
    prompt_template: str | None = None,
    prompt_version: str = "1",
    temperature: float | None = None,
    seed: int | None = None,
    params: dict | None = None,
    name: str | None = None,
) -> SimulatorConfig:
    params = params or {}
    fp = fingerprint(
        model=model,
        prompt_template=prompt_template,
        prompt_version=prompt_version,
        temperature=temperature,
        seed=seed,
        params=params,
    )
    temp = "model default" if temperature is None else temperature
    label = name or f"{model} | {prompt_template or 'default'}@{prompt_version} | T={temp}"
    return _get_or_insert(
        session,
        SimulatorConfig,
        fp,
        lambda: SimulatorConfig(
            fingerprint=fp,
            model=model,
            prompt_template=prompt_template,
            prompt_version=prompt_version,
            temperature=temperature,
            seed=seed,
            params=params,
            name=label,
        ),
    )


def get_label_source(session: Session, name: str) -> LabelSource:
    src = session.exec(select(LabelSource).where(LabelSource.name == name)).first()
    if src is None:
        names = session.exec(select(LabelSource.name).order_by(LabelSource.name)).all()
        raise NotFoundError(f"no label source {name!r} (known: {', '.join(names) or 'none'})")
    return src


def get_or_create_label_source(session: Session, name: str, kind: str, **fields: Any) -> LabelSource:
    src = session.exec(select(LabelSource).where(LabelSource.name == name)).first()
    if src is None:
        src = LabelSource(name=name, kind=kind, **fields)
        session.add(src)
        session.flush()
    return src


# --------------------------------------------------------------------------------------------------
# Tidy frames
# --------------------------------------------------------------------------------------------------

CONVERSATION_COLUMNS = [
    "conversation_id",
    "study_id",
    "user_kind",
    "scenario",
    "condition_id",
    "condition_key",
    "task_context_id",
    "profile_id",
    "assistant_config_id",
    "assistant_model",
    "participant",
    "simulator_config_id",
    "simulator",
    "run_id",
    "replicate",
    "twin_of_id",
    "status",
    "language",
    "started_at",
    "ended_at",
    "end_reason",
    "ended_by",
    "wave",
    "source",
    "external_id",
    "n_turns",
]


def conversations_df(
    session: Session, study_id: int, conversation_ids: Iterable[int] | None = None
) -> pd.DataFrame:
    """One row per conversation of the study with its condition and population columns."""
    # Columns, not ORM objects: a million Conversation objects would take gigabytes.
    cols = {
        "conversation_id": Conversation.id,
        "study_id": Conversation.study_id,
        "user_kind": Conversation.user_kind,
        "scenario": Scenario.key,
        "condition_id": Condition.id,
        "condition_key": Condition.key,
        "task_context_id": Condition.task_context_id,
        "profile_id": Condition.profile_id,
        "assistant_config_id": Condition.assistant_config_id,
        "assistant_model": AssistantConfig.model,
        "participant": Participant.pseudonym,
        "simulator_config_id": Conversation.simulator_config_id,
        "simulator": SimulatorConfig.name,
        "run_id": Conversation.run_id,
        "replicate": Conversation.replicate,
        "twin_of_id": Conversation.twin_of_id,
        "status": Conversation.status,
        "language": Conversation.language,
        "started_at": Conversation.started_at,
        "ended_at": Conversation.ended_at,
        "end_reason": Conversation.end_reason,
        "ended_by": Conversation.ended_by,
        "wave": Conversation.wave,
        "source": Conversation.source,
        "external_id": Conversation.external_id,
    }
    q = (
        select(*cols.values())
        .join(Condition, Condition.id == Conversation.condition_id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .join(AssistantConfig, AssistantConfig.id == Condition.assistant_config_id)
        .outerjoin(Participant, Participant.id == Conversation.participant_id)
        .outerjoin(SimulatorConfig, SimulatorConfig.id == Conversation.simulator_config_id)
        .where(Conversation.study_id == study_id)
        .order_by(Conversation.id)
    )
    if conversation_ids is not None:
        q = q.where(Conversation.id.in_(list(conversation_ids)))
    counts = (
        select(Turn.conversation_id, func.count(Turn.id))
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.study_id == study_id)
        .group_by(Turn.conversation_id)
    )
    conn = session.connection()
    texts = ["user_kind", "scenario", "condition_key", "assistant_model", "simulator", "status"]
    texts += ["language", "end_reason", "ended_by", "wave", "source"]
    out = read_frame(conn, q, list(cols), shared=texts)
    n_turns = read_frame(conn, counts, ["conversation_id", "n_turns"]).set_index("conversation_id")["n_turns"]
    out["n_turns"] = out["conversation_id"].map(n_turns).fillna(0).astype("int64")
    return out[CONVERSATION_COLUMNS]


TURN_COLUMNS = [
    "conversation_id",
    "index",
    "role",
    "content",
    "translation",
    "translation_language",
    "created_at",
    "completed_at",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "hallucination",
    "satisfaction",
    "satisfaction_reason",
    "intent",
]


def turns_df(session: Session, study_id: int, conversation_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per turn of the study's conversations, ordered by conversation and index."""
    # Columns rather than ORM entities: building tens of thousands of Turn objects is the slow part.
    q = (
        select(*[getattr(Turn, c) for c in TURN_COLUMNS])
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.study_id == study_id)
        .order_by(Turn.conversation_id, Turn.index)
    )
    if conversation_ids is not None:
        q = q.where(Turn.conversation_id.in_(list(conversation_ids)))
    rows = [dict(zip(TURN_COLUMNS, r)) for r in session.exec(q).all()]
    return pd.DataFrame(rows, columns=TURN_COLUMNS)


LABEL_COLUMNS = [
    "conversation_id",
    "turn_index",
    "dimension",
    "value",
    "source",
    "source_kind",
    "rationale",
    "flagged",
    "status",
    "samples",
    "created_at",
]


def labels_df(session: Session, study_id: int, sources: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per label of the study (optionally of the named sources only)."""
    q = (
        select(
            Label.conversation_id,
            Label.turn_index,
            Label.dimension,
            Label.value,
            LabelSource.name,
            LabelSource.kind,
            Label.rationale,
            Label.flagged,
            Label.status,
            Label.samples,
            Label.created_at,
        )
        .join(LabelSource, LabelSource.id == Label.source_id)
        .join(Conversation, Conversation.id == Label.conversation_id)
        .where(Conversation.study_id == study_id)
        .order_by(Label.conversation_id, Label.dimension, Label.turn_index)
    )
    if sources is not None:
        q = q.where(LabelSource.name.in_(list(sources)))
    # Columns rather than ORM entities (fast for the ~50k labels of the reference data); the select
    # lists them in LABEL_COLUMNS order.
    rows = [dict(zip(LABEL_COLUMNS, r)) for r in session.exec(q).all()]
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)


QUESTIONNAIRE_COLUMNS = [
    "conversation_id",
    "participant_id",
    "questionnaire",
    "item",
    "value",
    "raw_value",
    "question",
    "created_at",
]


def questionnaires_df(session: Session, study_id: int) -> pd.DataFrame:
    q = (
        select(QuestionnaireResponse)
        .where(QuestionnaireResponse.study_id == study_id)
        .order_by(QuestionnaireResponse.id)
    )
    rows = [{c: getattr(r, c) for c in QUESTIONNAIRE_COLUMNS} for r in session.exec(q).all()]
    return pd.DataFrame(rows, columns=QUESTIONNAIRE_COLUMNS)


def label_sources_df(session: Session, study_id: int | None = None) -> pd.DataFrame:
    """Label sources with their provenance (kind, model, prompt and codebook version) and how many labels
    each holds, with the times of the first and the last (in the study, when given)."""
    q = select(
        LabelSource.name,
        LabelSource.kind,
        LabelSource.model,
        LabelSource.prompt_version,
        LabelSource.codebook_version,
        func.count(Label.id),
        func.min(Label.created_at),
        func.max(Label.created_at),
    ).outerjoin(Label, Label.source_id == LabelSource.id)
    if study_id is not None:
        q = q.join(Conversation, Conversation.id == Label.conversation_id).where(
            Conversation.study_id == study_id
        )
    q = q.group_by(LabelSource.id).order_by(LabelSource.name)
    rows = [dict(zip(LABEL_SOURCE_LIST_COLUMNS, r)) for r in session.exec(q).all()]
    return pd.DataFrame(rows, columns=LABEL_SOURCE_LIST_COLUMNS)


LABEL_SOURCE_LIST_COLUMNS = [
    "name",
    "kind",
    "model",
    "prompt_version",
    "codebook_version",
    "n_labels",
    "first_label_at",
    "last_label_at",
]


def profile_and_context(
    session: Session, condition_id: int
) -> tuple[Condition, Scenario, TaskContext, Profile | None]:
    cond = session.get(Condition, condition_id)
    if cond is None:
        raise NotFoundError(f"no condition {condition_id}")
    scen = session.get(Scenario, cond.scenario_id)
    ctx = session.get(TaskContext, cond.task_context_id)
    prof = session.get(Profile, cond.profile_id) if cond.profile_id else None
    return cond, scen, ctx, prof


# --------------------------------------------------------------------------------------------------
# Study overview and progress (the researcher's Home and Progress pages)
# --------------------------------------------------------------------------------------------------


def study_names(session: Session) -> list[str]:
    """Every study's name, sorted."""
    return list(session.exec(select(Study.name).order_by(Study.name)).all())


def studies_overview_df(session: Session) -> pd.DataFrame:
    """Conversations per study and scenario, by user kind (columns human, agent); ``scenario_name``
    is the scenario's display name (the key is ``scenario``)."""
    rows = session.exec(
        select(Study.name, Scenario.key, Scenario.name, Conversation.user_kind, func.count(Conversation.id))
        .join(Conversation, Conversation.study_id == Study.id)
        .join(Condition, Condition.id == Conversation.condition_id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .group_by(Study.name, Scenario.key, Scenario.name, Conversation.user_kind)
    ).all()
    df = pd.DataFrame(rows, columns=["study", "scenario", "scenario_name", "user_kind", "n"])
    out = df.pivot_table(
        index=["study", "scenario", "scenario_name"],
        columns="user_kind",
        values="n",
        aggfunc="sum",
        fill_value=0,
    )
    out = out.reindex(columns=["human", "agent"], fill_value=0).reset_index()
    # Studies without conversations still appear.
    for name in study_names(session):
        if name not in set(out["study"]):
            out.loc[len(out)] = [name, "", "", 0, 0]
    return out.sort_values(["study", "scenario"]).reset_index(drop=True)[
        ["study", "scenario", "scenario_name", "human", "agent"]
    ]


def participants_status_df(session: Session, study_id: int) -> pd.DataFrame:
    rows = session.exec(
        select(Participant.status, func.count(Participant.id))
        .where(Participant.study_id == study_id)
        .group_by(Participant.status)
    ).all()
    return pd.DataFrame(rows, columns=["status", "participants"]).sort_values("status").reset_index(drop=True)


CONVERSATION_STATUSES = ["completed", "in_progress", "abandoned", "failed"]


COVERAGE_COLUMNS = [
    "condition",
    "scenario",
    "profile",
    "coverage",
    "human_completed",
    "human_in_progress",
    "agent_completed",
    "quota",
]


def _profile_name(key: str | None) -> str:
    # A designed condition without a profile is filled by each participant's own; simulated users
    # reach it only as digital twins of those participants (twin conditions, folded in here).
    return key or "each participant's own"


def condition_coverage_df(session: Session, study_id: int) -> pd.DataFrame:
    """Every designed condition of the study, covered or not: completed and running conversations by
    user kind, and which kinds have a completed one (``coverage``: "human and agent", "human only",
    "agent only" or "none"). A twin condition (``base|pseudonym``: a participant's own profile) is
    counted under its base condition. Example row: ``trip_planning/en-1/pool-3, Trip planning, pool-3,
    "human and agent", 2, 0, 5, None``."""
    conds = session.exec(
        select(Condition.id, Condition.key, Scenario.name, Profile.key, Condition.quota)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .join(Profile, Profile.id == Condition.profile_id, isouter=True)
        .where(Condition.study_id == study_id)
        .order_by(Condition.id)
    ).all()
    keys = {key for _, key, *_ in conds}
    base_of = {cid: key.split("|")[0] if key.split("|")[0] in keys else key for cid, key, *_ in conds}
    rows = {
        key: dict(zip(COVERAGE_COLUMNS, [key, scen, _profile_name(prof), "", 0, 0, 0, quota]))
        for cid, key, scen, prof, quota in conds
        if base_of[cid] == key
    }
    counts = session.exec(
        select(
            Conversation.condition_id,
            Conversation.user_kind,
            Conversation.status,
            func.count(Conversation.id),
        )
        .where(Conversation.study_id == study_id, Conversation.status.in_(["completed", "in_progress"]))
        .group_by(Conversation.condition_id, Conversation.user_kind, Conversation.status)
    ).all()
    for cid, kind, status, n in counts:
        column = f"{kind}_{status}"
        if cid in base_of and column in COVERAGE_COLUMNS:
            rows[base_of[cid]][column] += n
    for row in rows.values():
        human, agent = row["human_completed"] > 0, row["agent_completed"] > 0
        row["coverage"] = {
            (True, True): "human and agent",
            (True, False): "human only",
            (False, True): "agent only",
        }.get((human, agent), "none")
    return pd.DataFrame(list(rows.values()), columns=COVERAGE_COLUMNS)


def assistant_failures_df(session: Session, study_id: int, limit: int = 50) -> pd.DataFrame:
    """The latest failed assistant calls in participant sessions (participants see only a short
    notice; the details are here and in the server log), newest first."""
    rows = session.exec(
        select(LLMCall.created_at, LLMCall.conversation_id, LLMCall.model, LLMCall.error)
        .where(LLMCall.study_id == study_id, LLMCall.purpose == "assistant", LLMCall.error.is_not(None))
        .order_by(LLMCall.id.desc())
        .limit(limit)
    ).all()
    return pd.DataFrame(rows, columns=["time", "conversation", "model", "error"])


def dropouts_df(session: Session, study_id: int) -> pd.DataFrame:
    """Participants who abandoned or were screened out, with how far they got (pseudonyms only)."""
    rows = []
    for p in session.exec(
        select(Participant)
        .where(Participant.study_id == study_id, Participant.status.in_(["abandoned", "screened_out"]))
        .order_by(Participant.id)
    ).all():
        done = session.exec(
            select(func.count(Assignment.id)).where(
                Assignment.participant_id == p.id, Assignment.status == "completed"
            )
        ).one()
        rows.append(
            {
                "participant": p.pseudonym,
                "status": p.status,
                "step": (p.state or {}).get("step"),
                "tasks_completed": done,
                "last_seen_at": p.last_seen_at,
            }
        )
    return pd.DataFrame(rows, columns=["participant", "status", "step", "tasks_completed", "last_seen_at"])


def condition_choices(session: Session, study_id: int) -> list[tuple[str, str]]:
    """(condition key, scenario key) of a study's conditions, by scenario then key: what a
    simulation can be limited to."""
    rows = session.exec(
        select(Condition.key, Scenario.key)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .where(Condition.study_id == study_id)
        .order_by(Scenario.key, Condition.key)
    ).all()
    return [(str(c), str(s)) for c, s in rows]


def run_spend(session: Session, run_ids: Iterable[int]) -> dict[int, float]:
    """USD spent per simulation run (the recorded calls' cost; unpriced calls count 0)."""
    ids = list(run_ids)
    if not ids:
        return {}
    rows = session.exec(
        select(LLMCall.run_id, func.sum(LLMCall.cost_usd))
        .where(LLMCall.run_id.in_(ids))
        .group_by(LLMCall.run_id)
    ).all()
    return {int(r): float(c or 0.0) for r, c in rows}


def record_run_plan(session: Session, run_key: str, planned: int, budget: float | None) -> None:
    """Keep a run's planned number of conversations and its budget on its row (``params``), so
    every session and process sees the total it is working towards."""
    run = session.exec(select(SimulationRun).where(SimulationRun.key == run_key)).first()
    if run is not None:
        run.params = {**(run.params or {}), "planned_conversations": int(planned), "budget_usd": budget}
        session.add(run)
