"""The researcher console's core: study overview, progress, transcripts, settings, simulation, export."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.engine import session_scope
from db.errors import UserInputError, WorkbenchError
from db.models import (
    Assignment,
    AssistantConfig,
    Condition,
    Conversation,
    LLMCall,
    Participant,
    Scenario,
    SimulationRun,
    Study,
    Turn,
)
from db.repo import conversations_df, get_study
from db.types import utcnow
from scenarios import load_library, sync_library
from workbench.dataio.export import export_study
from workbench.participation.flow import TurnView, conversation_turns
from workbench.simulation.runner import run_simulation
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


def available_scenarios(extra_dirs=()) -> list[str]:
    return sorted(load_library(extra_dirs=extra_dirs).scenarios)


def create_study_from_packs(
    session: Session,
    name: str,
    assistant_model: str,
    scenarios: list[str],
    profiles: int | None,
    language: str,
    system_prompt: str | None,
    settings: dict,
    extra_dirs=(),
) -> tuple[Study, int]:
    """Sync the scenario packs (bundled + ``extra_dirs``) and create the study
    (``workbench.studies.create_study``)."""
    if not name.strip():
        raise UserInputError("give the study a name")
    if not assistant_model.strip() or "/" not in assistant_model:
        raise UserInputError("the assistant model is a 'provider/model' name, e.g. openai/gpt-4o-mini")
    validated = StudySettings.model_validate(settings).model_dump(exclude_none=True)
    library = load_library(extra_dirs=extra_dirs)
    sync_library(session, library)
    return create_study(
        session,
        name.strip(),
        assistant_model.strip(),
        scenarios=scenarios or None,
        profiles=profiles or None,
        language=language,
        system_prompt=system_prompt or None,
        settings=validated,
        library=library,
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
# Simulation and export
# --------------------------------------------------------------------------------------------------

_runs: dict[str, threading.Thread] = {}
_run_errors: dict[str, str] = {}


def start_simulation(
    engine: Engine,
    study_name: str,
    simulator_model: str,
    n_per_condition: int = 1,
    concurrency: int = 4,
    max_turns: int | None = None,
    twins: bool = False,
    cache: bool = True,
    prices_file=None,
) -> str:
    """Start ``run_simulation`` in a background thread; progress is followed from the database.

    With ``twins`` the run simulates a digital twin of every human conversation (same condition,
    the participant's own profile) instead of the study's designed conditions.
    """
    if not simulator_model.strip() or "/" not in simulator_model:
        raise UserInputError("the simulator model is a 'provider/model' name, e.g. openai/gpt-4o-mini")
    from workbench.llm import get_model

    get_model(
        simulator_model.strip()
    )  # unknown provider, missing package or key: said now, not after Refresh
    with session_scope(engine) as s:
        get_study(s, study_name)
    key = f"{study_name}:{simulator_model}:{'twins' if twins else 'conditions'}"
    if key in _runs and _runs[key].is_alive():
        raise UserInputError("a simulation with this model is already running for this study")

    def work() -> None:
        try:
            run_simulation(
                engine,
                study_name,
                simulator_model,
                n_per_condition=n_per_condition,
                concurrency=concurrency,
                max_turns=max_turns,
                twin_of=["all"] if twins else None,
                cache=cache,
                prices_file=prices_file,
            )
        except WorkbenchError as exc:  # a user-facing error: its message says what to do
            _run_errors[key] = str(exc)
        except Exception as exc:  # shown on the page; the runner's own rows say how far it got
            _run_errors[key] = f"{exc.__class__.__name__}: {exc}"

    _run_errors.pop(key, None)
    t = threading.Thread(target=work, name=f"simulation {key}", daemon=True)
    _runs[key] = t
    t.start()
    return key


def simulation_status(key: str) -> dict:
    t = _runs.get(key)
    return {"running": bool(t and t.is_alive()), "error": _run_errors.get(key)}


STALE_MINUTES = 10


def simulation_runs_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per run. A run still marked running whose process is gone (a killed CLI, a restarted
    server) says so, and that starting the same simulation again resumes it: the run's owner is
    checked as ``claim_run`` checks it (its process id on this machine, its heartbeat and turns
    elsewhere); a run without an owner (made before owners were recorded) counts as stopped once its
    last turn is older than ``STALE_MINUTES``."""
    from db.leases import owner_alive

    rows = []
    now = utcnow()
    for run in session.exec(
        select(SimulationRun).where(SimulationRun.study_id == study_id).order_by(SimulationRun.id)
    ).all():
        counts = dict(
            session.exec(
                select(Conversation.status, func.count(Conversation.id))
                .where(Conversation.run_id == run.id)
                .group_by(Conversation.status)
            ).all()
        )
        # max() keeps the column's type, so the value comes back as aware UTC on both databases
        last = (
            session.exec(
                select(func.max(Turn.created_at))
                .join(Conversation, Conversation.id == Turn.conversation_id)
                .where(Conversation.run_id == run.id)
            ).one()
            or run.created_at
        )
        status, process = run.status, ""
        if run.owner:
            host, pid, _ = run.owner.rsplit(":", 2)
            process = f"pid {pid} on {host}"
        if status == "running":
            if run.owner:
                latest = max(t for t in (run.heartbeat_at, last) if t is not None)
                if not owner_alive(run.owner, latest):
                    status = f"stopped? its process ({process}) is gone; start it again to resume"
            else:
                idle = int((now - last).total_seconds() // 60)
                if idle >= STALE_MINUTES:
                    status = f"running? no new turn for {idle} min: its process may have stopped; start it again to resume"
        rows.append(
            {
                "run": run.key[:12],
                "status": status,
                "process": process,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "last_turn_at": last,
                "completed": counts.get("completed", 0),
                "in_progress": counts.get("in_progress", 0),
                "failed": counts.get("failed", 0),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "run",
            "status",
            "process",
            "created_at",
            "finished_at",
            "last_turn_at",
            "completed",
            "in_progress",
            "failed",
        ],
    )


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
