"""The researcher console's core: study overview, progress, transcripts, settings, simulation, export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.errors import UserInputError, WorkbenchError
from db.models import (
    Assignment,
    AssistantConfig,
    Condition,
    Conversation,
    LLMCall,
    Participant,
    Scenario,
    Study,
)
from db.repo import conversations_df, get_study
from db.types import utcnow
from scenarios import load_library, sync_library
from workbench.dataio.export import export_study
from workbench.participation.flow import TurnView, conversation_turns
from workbench.studies import StudySettings, check_settings, create_study, study_settings

# --------------------------------------------------------------------------------------------------
# Overview and progress
# --------------------------------------------------------------------------------------------------


def study_names(session: Session) -> list[str]:
    return list(session.exec(select(Study.name).order_by(Study.name)).all())


def studies_overview_df(session: Session) -> pd.DataFrame:
    """Conversations per study and scenario, by user kind (columns human, agent)."""
    rows = session.exec(
        select(Study.name, Scenario.key, Conversation.user_kind, func.count(Conversation.id))
        .join(Conversation, Conversation.study_id == Study.id)
        .join(Condition, Condition.id == Conversation.condition_id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .group_by(Study.name, Scenario.key, Conversation.user_kind)
    ).all()
    df = pd.DataFrame(rows, columns=["study", "scenario", "user_kind", "n"])
    out = df.pivot_table(
        index=["study", "scenario"], columns="user_kind", values="n", aggfunc="sum", fill_value=0
    )
    out = out.reindex(columns=["human", "agent"], fill_value=0).reset_index()
    # Studies without conversations still appear.
    for name in study_names(session):
        if name not in set(out["study"]):
            out.loc[len(out)] = [name, "", 0, 0]
    return out.sort_values(["study", "scenario"]).reset_index(drop=True)[
        ["study", "scenario", "human", "agent"]
    ]


def participants_status_df(session: Session, study_id: int) -> pd.DataFrame:
    rows = session.exec(
        select(Participant.status, func.count(Participant.id))
        .where(Participant.study_id == study_id)
        .group_by(Participant.status)
    ).all()
    return pd.DataFrame(rows, columns=["status", "participants"]).sort_values("status").reset_index(drop=True)


def condition_progress_df(session: Session, study_id: int) -> pd.DataFrame:
    """Conversations per condition by user kind and status (twin conditions included)."""
    rows = session.exec(
        select(
            Condition.key,
            Scenario.key,
            Conversation.user_kind,
            Conversation.status,
            func.count(Conversation.id),
        )
        .join(Conversation, Conversation.condition_id == Condition.id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .where(Condition.study_id == study_id)
        .group_by(Condition.key, Scenario.key, Conversation.user_kind, Conversation.status)
    ).all()
    df = pd.DataFrame(rows, columns=["condition", "scenario", "user_kind", "status", "n"])
    if df.empty:
        return pd.DataFrame(
            columns=["condition", "scenario", "user_kind", "completed", "in_progress", "abandoned", "failed"]
        )
    out = df.pivot_table(
        index=["condition", "scenario", "user_kind"],
        columns="status",
        values="n",
        aggfunc="sum",
        fill_value=0,
    )
    out = out.reindex(columns=["completed", "in_progress", "abandoned", "failed"], fill_value=0).reset_index()
    return out


def assistant_model_problems(session: Session, study_id: int) -> list[str]:
    """Why the study's assistant model(s) cannot answer participants from this server (a missing
    API key, a missing package or file), one sentence each; empty when they can. Such a failure
    happens before any call is made, so it is not in the failed-calls table."""
    from workbench.llm import check_model_name

    study = session.get(Study, study_id)
    if study is None or study.source == "imported":  # nobody takes part in imported data
        return []
    models = session.exec(
        select(AssistantConfig.model)
        .join(Condition, Condition.assistant_config_id == AssistantConfig.id)
        .where(Condition.study_id == study_id)
        .distinct()
    ).all()
    problems = []
    for model in sorted(models):
        try:
            missing = check_model_name(model)
        except WorkbenchError as exc:
            missing = str(exc)
        if missing:
            problems.append(missing)
    return problems


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


# --------------------------------------------------------------------------------------------------
# Transcripts
# --------------------------------------------------------------------------------------------------


def transcripts_df(
    session: Session,
    study_name: str,
    scenario: str | None = None,
    user_kind: str | None = None,
    condition: str | None = None,
) -> pd.DataFrame:
    study = get_study(session, study_name)
    df = conversations_df(session, study.id)
    if scenario:
        df = df[df["scenario"] == scenario]
    if user_kind:
        df = df[df["user_kind"] == user_kind]
    if condition:
        df = df[df["condition_key"] == condition]
    return df[
        [
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
    ].reset_index(drop=True)


def transcript(session: Session, conversation_id: int) -> list[TurnView]:
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


# --------------------------------------------------------------------------------------------------
# Study configuration and invites
# --------------------------------------------------------------------------------------------------


def available_scenarios() -> list[str]:
    return sorted(load_library().scenarios)


def create_study_from_packs(
    session: Session,
    name: str,
    assistant_model: str,
    scenarios: list[str],
    profiles: int | None,
    language: str,
    system_prompt: str | None,
    settings: dict,
) -> tuple[Study, int]:
    """Sync the scenario packs and create the study (``workbench.studies.create_study``)."""
    if not name.strip():
        raise UserInputError("give the study a name")
    if not assistant_model.strip() or "/" not in assistant_model:
        raise UserInputError("the assistant model is a 'provider/model' name, e.g. openai/gpt-4o-mini")
    validated = StudySettings.model_validate(settings).model_dump(exclude_none=True)
    sync_library(session)
    return create_study(
        session,
        name.strip(),
        assistant_model.strip(),
        scenarios=scenarios or None,
        profiles=profiles or None,
        language=language,
        system_prompt=system_prompt or None,
        settings=validated,
    )


def update_settings(session: Session, study_name: str, changes: dict) -> StudySettings:
    """Validate and store new settings for a study (unknown keys are kept, bad values refused)."""
    study = get_study(session, study_name)
    try:
        new = StudySettings.model_validate({**(study.settings or {}), **changes})
    except Exception as exc:
        raise UserInputError(f"invalid settings: {exc}") from exc
    check_settings(new)
    if new.profile_mode == "assigned":
        without = session.exec(
            select(func.count(Condition.id)).where(
                Condition.study_id == study.id, Condition.profile_id.is_(None)
            )
        ).one()
        if without:
            raise UserInputError(
                f"profile mode 'assigned' needs a profile in every condition; {without} condition(s) "
                "of this study have none (create the study with profiles, or keep 'participant')"
            )
    study.settings = new.model_dump(mode="json")
    session.add(study)
    session.flush()
    return new


def get_settings(session: Session, study_name: str) -> StudySettings:
    return study_settings(get_study(session, study_name))


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------

EXPORT_ROOT = "workbench-exports"
EXPORT_KEEP_HOURS = 24


def export_for_download(engine: Engine, study_name: str, fmt: str, previous: dict | None = None) -> dict:
    """Export into a fresh folder under the temp directory for the page's download buttons. The
    ``previous`` export (of the same browser session) is deleted, and so is every export folder older
    than ``EXPORT_KEEP_HOURS``, so exports do not pile up on the server."""
    import shutil
    import tempfile
    import time

    root = Path(tempfile.gettempdir()) / EXPORT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    if previous and previous.get("dir"):
        shutil.rmtree(previous["dir"], ignore_errors=True)
    cutoff = time.time() - EXPORT_KEEP_HOURS * 3600
    for old in root.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    out = Path(tempfile.mkdtemp(prefix="export-", dir=root))
    try:
        files = export(engine, study_name, fmt, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "study": study_name,
        "format": fmt,
        "dir": str(out),
        "files": [str(p) for p in files],
        "at": utcnow(),
    }


def export_files(done: dict) -> list[Path]:
    """The files of an ``export_for_download`` result that still exist."""
    return [p for p in map(Path, done.get("files", [])) if p.is_file()]


def export(engine: Engine, study_name: str, fmt: str, out_dir: Path) -> list[Path]:
    if fmt not in ("jsonl", "csv", "parquet"):
        raise UserInputError("the export format is jsonl, csv or parquet")
    return list(export_study(engine, study_name, fmt, Path(out_dir)))
