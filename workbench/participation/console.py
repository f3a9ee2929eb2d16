"""Background simulation runs started from the researcher console (to move to
workbench/simulation/runs.py; the rest of the console moved to db.repo, workbench.studies,
workbench.dataio.export and workbench.participation.transcripts)."""

from __future__ import annotations

import threading

import pandas as pd
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.engine import session_scope
from db.errors import UserInputError, WorkbenchError
from db.models import Conversation, SimulationRun, Turn
from db.repo import get_study
from db.types import utcnow
from workbench.simulation.runner import run_simulation

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
