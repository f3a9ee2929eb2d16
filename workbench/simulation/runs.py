"""Simulation runs in the background (for the Simulation page) and the table of a study's runs."""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.engine import session_scope
from db.errors import UserInputError, WorkbenchError
from db.leases import owner_alive
from db.models import Conversation, SimulationRun, Turn
from db.repo import get_study, record_run_plan, run_spend
from db.types import utcnow
from workbench.simulation.runner import plan_simulation, run_simulation
from workbench.simulation.spec import SimulationSpec

_runs: dict[str, threading.Thread] = {}
_run_errors: dict[str, str] = {}


def start_simulation(engine: Engine, spec: SimulationSpec) -> str:
    """Start ``run_simulation(engine, spec)`` in a background thread and return the key to follow it
    with ``simulation_status``; its progress is followed from the database.

    With ``spec.twin_of`` the run simulates digital twins of human conversations (same condition,
    the participant's own profile) instead of the study's designed conditions.
    """
    from workbench.llm import get_model

    get_model(spec.simulator_model)  # unknown provider, missing package or key: said now, not after Refresh
    if isinstance(spec.study, str):
        with session_scope(engine) as s:
            get_study(s, spec.study)  # an unknown study: said now
    key = f"{spec.study}:{spec.simulator_model}:{'twins' if spec.twin_of else 'conditions'}"
    if key in _runs and _runs[key].is_alive():
        raise UserInputError("a simulation with this model is already running for this study")

    run_key = plan_simulation(engine, spec).run_key
    recorded: list[bool] = []

    def plan_known(prog) -> None:
        # The run's row exists once progress is first reported: keep its planned total and budget
        # there, so every researcher session (and a CLI) sees what the run works towards.
        if not recorded:
            recorded.append(True)
            with session_scope(engine) as s:
                record_run_plan(s, run_key, prog.total, spec.budget)

    def work() -> None:
        try:
            run_simulation(engine, spec, progress=plan_known)
        except WorkbenchError as exc:  # a user-facing error: its message says what to do
            _run_errors[key] = str(exc)
        except Exception as exc:  # shown on the page; the runner's own rows say how far it got
            _run_errors[key] = f"{exc.__class__.__name__}: {exc}"

    _run_errors.pop(key, None)
    t = threading.Thread(target=work, name=f"simulation {key}", daemon=True)
    _runs[key] = t
    t.start()
    return key


def study_run_errors(study: str) -> list[str]:
    """The messages that stopped this server's background runs of ``study`` (any session's)."""
    return [
        msg for key, msg in _run_errors.items() if key.startswith(f"{study}:") and not _runs[key].is_alive()
    ]


def simulation_status(key: str) -> dict:
    """``running`` (bool) and ``error`` (the message that stopped the run, or None)."""
    t = _runs.get(key)
    return {"running": bool(t and t.is_alive()), "error": _run_errors.get(key)}


STALE_MINUTES = 10

RUN_COLUMNS = [
    "run",
    "status",
    "planned",
    "progress",
    "spend_usd",
    "budget_usd",
    "process",
    "created_at",
    "finished_at",
    "last_turn_at",
    "completed",
    "in_progress",
    "failed",
]


def simulation_runs_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per run. A run still marked running whose process is gone (a killed CLI, a restarted
    server) says so, and that starting the same simulation again resumes it: the run's owner is
    checked as ``claim_run`` checks it (its process id on this machine, its heartbeat and turns
    elsewhere); a run without an owner (made before owners were recorded) counts as stopped once its
    last turn is older than ``STALE_MINUTES``."""
    rows = []
    now = utcnow()
    runs = session.exec(
        select(SimulationRun).where(SimulationRun.study_id == study_id).order_by(SimulationRun.id)
    ).all()
    spend = run_spend(session, [r.id for r in runs])
    for run in runs:
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
        status, process = _run_status(run, last, now)
        params = run.params or {}
        n = sum(counts.values())
        planned = int(params.get("planned_conversations") or n)
        rows.append(
            {
                "run": run.key[:12],
                "status": status,
                "planned": planned,
                # finished conversations (completed or failed) of the planned total, 0..1
                "progress": min(1.0, (counts.get("completed", 0) + counts.get("failed", 0)) / planned)
                if planned
                else 0.0,
                "spend_usd": round(spend.get(run.id, 0.0), 4),
                "budget_usd": params.get("budget_usd"),
                "process": process,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "last_turn_at": last,
                "completed": counts.get("completed", 0),
                "in_progress": counts.get("in_progress", 0),
                "failed": counts.get("failed", 0),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _run_status(run: SimulationRun, last_turn_at: datetime, now: datetime) -> tuple[str, str]:
    """(status, process) of a run as the table shows them: a run marked running whose process is
    gone says so."""
    status, process = run.status, ""
    if run.owner:
        host, pid, _ = run.owner.rsplit(":", 2)
        process = f"pid {pid} on {host}"
    if status == "running":
        if run.owner:
            latest = max(t for t in (run.heartbeat_at, last_turn_at) if t is not None)
            if not owner_alive(run.owner, latest):
                status = f"stopped? its process ({process}) is gone; start it again to resume"
        else:
            idle = int((now - last_turn_at).total_seconds() // 60)
            if idle >= STALE_MINUTES:
                status = f"running? no new turn for {idle} min: its process may have stopped; start it again to resume"
    return status, process


def run_names(session: Session, study_id: int) -> dict[int, str]:
    """Run id -> the name the runs table shows (the first 12 characters of its key), e.g. to name
    the runs of ``workbench.llm.costs.costs_df``."""
    runs = session.exec(
        select(SimulationRun.id, SimulationRun.key).where(SimulationRun.study_id == study_id)
    ).all()
    return {int(i): key[:12] for i, key in runs}
