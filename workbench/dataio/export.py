"""Export a study: ``conversations.jsonl`` (one conversation per line, OpenAI chat ``messages`` plus
metadata) and tidy tables (conversations, conditions, turns, labels, label_sources, questionnaires).

Formats: ``jsonl`` writes the JSONL file and the tables as CSV; ``csv`` and ``parquet`` write the
tables in that format, plus a ``records`` table holding each JSONL line (``conversation_id``,
``record``), so every format can be imported again (``workbench import jsonl DIR``). Nested values
(lists, dicts) in the tables are JSON strings so that both formats read back the same. The
``participants`` table (pseudonym, status, language, times) keeps participants who have no
conversation, and ``questionnaires`` names each answer's participant by pseudonym (consent and
profile answers belong to a participant, not to a conversation). Exports never hold API keys, invite tokens, password hashes or the
participants' external ids (Prolific ids, user folders): people appear by pseudonym only.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db import repo
from db.errors import UserInputError
from db.models import (
    AssistantConfig,
    Condition,
    Conversation,
    LabelSource,
    Participant,
    Profile,
    Scenario,
    SimulationRun,
    SimulatorConfig,
    Study,
    TaskContext,
    Turn,
)
from workbench.simulation.runner import run_costs

FORMATS = ("jsonl", "csv", "parquet")
TABLES = (
    "conversations",
    "conditions",
    "turns",
    "labels",
    "label_sources",
    "questionnaires",
    "participants",
)
RECORDS = "records"  # the JSONL lines as a table, in the csv and parquet formats
PARTICIPANT_COLUMNS = ["participant", "status", "language", "created_at", "completed_at"]

CONDITION_COLUMNS = [
    "condition_id",
    "key",
    "scenario",
    "task_context_id",
    "task_context_key",
    "task_context_language",
    "task_context_text",
    "profile_id",
    "profile_key",
    "assistant_config_id",
    "assistant_model",
    "language",
    "quota",
    "created_at",
]
LABEL_SOURCE_COLUMNS = ["name", "kind", "model", "prompt_version", "codebook_version", "params", "n_labels"]
_TURN_EXTRAS = (
    "index",
    "role",
    "translation",
    "translation_language",
    "created_at",
    "completed_at",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "hallucination",
    "hallucination_note",
    "satisfaction",
    "satisfaction_reason",
    "intent",
    "meta",
)


def export_study(engine: Engine, study_name: str, fmt: str, out_dir: str | Path) -> list[Path]:
    """Write the study's export files into ``out_dir``; returns the paths written."""
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with Session(engine) as s:
        study = repo.get_study(s, study_name)
        frames = _frames(s, study.id)
        written = []
        if fmt == "jsonl":
            path = out / "conversations.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for line in conversation_lines(s, study):
                    fh.write(json.dumps(line, ensure_ascii=False, default=_json_default) + "\n")
            written.append(path)
        else:
            frames[RECORDS] = pd.DataFrame(
                [
                    {"conversation_id": line["id"], "record": json.dumps(line, default=_json_default)}
                    for line in conversation_lines(s, study)
                ],
                columns=["conversation_id", "record"],
            )
    table_fmt = "csv" if fmt == "jsonl" else fmt
    for name in TABLES + ((RECORDS,) if RECORDS in frames else ()):
        df = _flatten(frames[name])
        path = out / f"{name}.{table_fmt}"
        if table_fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        written.append(path)
    return written


def _frames(s: Session, study_id: int) -> dict[str, pd.DataFrame]:
    pseudos = dict(
        s.exec(select(Participant.id, Participant.pseudonym).where(Participant.study_id == study_id)).all()
    )
    answers = repo.questionnaires_df(s, study_id)
    # the pseudonym, which survives a round trip (the id does not); int ids stay ints (no NaN floats)
    answers.insert(2, "participant", answers["participant_id"].map(pseudos))
    for col in ("conversation_id", "participant_id"):
        answers[col] = answers[col].astype("Int64")
    return {
        "conversations": repo.conversations_df(s, study_id),
        "conditions": conditions_df(s, study_id),
        "turns": repo.turns_df(s, study_id),
        "labels": repo.labels_df(s, study_id),
        "label_sources": label_sources_df(s, study_id),
        "questionnaires": answers,
        "participants": participants_df(s, study_id),
    }


def participants_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per participant of the study, by pseudonym (no external ids, tokens or flow state)."""
    rows = [
        {
            "participant": p.pseudonym,
            "status": p.status,
            "language": p.language,
            "created_at": p.created_at,
            "completed_at": p.completed_at,
        }
        for p in session.exec(
            select(Participant).where(Participant.study_id == study_id).order_by(Participant.id)
        ).all()
    ]
    return pd.DataFrame(rows, columns=PARTICIPANT_COLUMNS)


def conditions_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per condition of the study with its scenario, task context, profile and assistant model."""
    q = (
        select(Condition, Scenario.key, TaskContext, Profile.key, AssistantConfig.model)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .join(TaskContext, TaskContext.id == Condition.task_context_id)
        .join(AssistantConfig, AssistantConfig.id == Condition.assistant_config_id)
        .outerjoin(Profile, Profile.id == Condition.profile_id)
        .where(Condition.study_id == study_id)
        .order_by(Condition.id)
    )
    rows = []
    for cond, scen, tc, prof_key, model in session.exec(q).all():
        rows.append(
            {
                "condition_id": cond.id,
                "key": cond.key,
                "scenario": scen,
                "task_context_id": tc.id,
                "task_context_key": tc.key,
                "task_context_language": tc.language,
                "task_context_text": tc.text,
                "profile_id": cond.profile_id,
                "profile_key": prof_key,
                "assistant_config_id": cond.assistant_config_id,
                "assistant_model": model,
                "language": cond.language,
                "quota": cond.quota,
                "created_at": cond.created_at,
            }
        )
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


def label_sources_df(session: Session, study_id: int) -> pd.DataFrame:
    """The label sources used in the study, with what is needed to recreate them on import."""
    counts = repo.label_sources_df(session, study_id)
    n = dict(zip(counts["name"], counts["n_labels"]))
    rows = []
    for src in session.exec(
        select(LabelSource).where(LabelSource.name.in_(list(n))).order_by(LabelSource.name)
    ).all():
        rows.append(
            {
                "name": src.name,
                "kind": src.kind,
                "model": src.model,
                "prompt_version": src.prompt_version,
                "codebook_version": src.codebook_version,
                "params": src.params,
                "n_labels": int(n[src.name]),
            }
        )
    return pd.DataFrame(rows, columns=LABEL_SOURCE_COLUMNS)


def conversation_lines(session: Session, study: Study):
    """One dict per conversation: id, user_kind, scenario, condition_id, messages, metadata, turns."""
    rows = _study_rows(session, study)
    convs = session.exec(
        select(Conversation).where(Conversation.study_id == study.id).order_by(Conversation.id)
    ).all()
    turns = _study_turns(session, study)
    for conv in convs:
        yield _conversation_line(study, conv, rows, turns.get(conv.id, []))


def _by_id(session: Session, model, ids: set) -> dict:
    return {r.id: r for r in session.exec(select(model).where(model.id.in_(ids))).all()} if ids else {}


def _study_rows(session: Session, study: Study) -> dict[str, dict]:
    """The rows the study's conversations refer to, by id, each kind loaded once."""
    conds = {c.id: c for c in session.exec(select(Condition).where(Condition.study_id == study.id)).all()}
    return {
        "conds": conds,
        "scen": {s.id: s for s in session.exec(select(Scenario)).all()},
        "tcs": _by_id(session, TaskContext, {c.task_context_id for c in conds.values()}),
        "profs": _by_id(session, Profile, {c.profile_id for c in conds.values() if c.profile_id}),
        "assts": _by_id(session, AssistantConfig, {c.assistant_config_id for c in conds.values()}),
        "sims": {c.id: c for c in session.exec(select(SimulatorConfig)).all()},
        "runs": (
            runs := {
                r.id: r
                for r in session.exec(select(SimulationRun).where(SimulationRun.study_id == study.id)).all()
            }
        ),
        "run_costs": run_costs(session, list(runs)),
        "pseudos": dict(
            session.exec(
                select(Participant.id, Participant.pseudonym).where(Participant.study_id == study.id)
            ).all()
        ),
    }


def _study_turns(session: Session, study: Study) -> dict[int, list[dict]]:
    # Turn columns, not ORM objects: much faster for tens of thousands of turns.
    turns: dict[int, list[dict]] = {}
    tq = (
        select(Turn.conversation_id, Turn.content, *[getattr(Turn, c) for c in _TURN_EXTRAS])
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.study_id == study.id)
        .order_by(Turn.conversation_id, Turn.index)
    )
    for r in session.exec(tq).all():
        turns.setdefault(r[0], []).append(dict(zip(("content",) + _TURN_EXTRAS, r[1:])))
    return turns


def _conversation_line(study: Study, conv: Conversation, rows: dict[str, dict], ts: list[dict]) -> dict:
    cond = rows["conds"][conv.condition_id]
    sc = rows["scen"][cond.scenario_id]
    run = rows["runs"].get(conv.run_id)
    sim = rows["sims"].get(conv.simulator_config_id)
    asst = rows["assts"][cond.assistant_config_id]
    return {
        "id": conv.id,
        "user_kind": conv.user_kind,
        "scenario": sc.key,
        "condition_id": cond.id,
        "messages": [{"role": t["role"], "content": t["content"]} for t in ts],
        "study": study.name,
        "condition_key": cond.key,
        "status": conv.status,
        "language": conv.language,
        "wave": conv.wave,
        "source": conv.source,
        "external_id": conv.external_id,
        "participant": rows["pseudos"].get(conv.participant_id),
        "replicate": conv.replicate,
        "run_id": conv.run_id,
        # the simulation run that made it (re-created by `import jsonl`, so provenance survives a round trip)
        "run": None if run is None else _run_info(run, rows["run_costs"][run.id]),
        "twin_of": conv.twin_of_id,  # the "id" of the human conversation this one is a digital twin of
        "started_at": conv.started_at,
        "ended_at": conv.ended_at,
        "end_reason": conv.end_reason,
        "ended_by": conv.ended_by,
        "scenario_info": {"key": sc.key, "name": sc.name, "names": sc.names},
        "task_context": _task_context_info(rows["tcs"][cond.task_context_id]),
        "profile": _profile_info(rows["profs"].get(cond.profile_id)),
        "assistant_model": asst.model,
        "assistant": _assistant_info(asst),
        "simulator": None if sim is None else _simulator_info(sim),
        "meta": conv.meta,
        "turns": [{c: t[c] for c in _TURN_EXTRAS} for t in ts],
    }


def _run_info(run: SimulationRun, costs: dict) -> dict:
    return {
        "key": run.key,
        # calls and cost of the current attempts, and apart of attempts a restart abandoned
        "cost": costs,
        "status": run.status,
        "params": run.params,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _task_context_info(tc: TaskContext) -> dict:
    return {
        "key": tc.key,
        "language": tc.language,
        "text": tc.text,
        "translations": tc.translations,
        "slots": tc.slots,
        "source": tc.source,
    }


def _profile_info(prof: Profile | None) -> dict | None:
    if prof is None:
        return None
    return {
        "key": prof.key,
        "language": prof.language,
        "fields": prof.fields,
        "text": prof.text,
        "translations": prof.translations,
        "source": prof.source,
    }


def _assistant_info(asst: AssistantConfig) -> dict:
    return {
        "model": asst.model,
        "name": asst.name,
        "system_prompt": asst.system_prompt,
        "temperature": asst.temperature,
        "max_tokens": asst.max_tokens,
        "version": asst.version,
        "params": asst.params,
    }


def _simulator_info(sim: SimulatorConfig) -> dict:
    return {
        "model": sim.model,
        "name": sim.name,
        "prompt_template": sim.prompt_template,
        "prompt_version": sim.prompt_version,
        "temperature": sim.temperature,
        "seed": sim.seed,
        "params": sim.params,
    }


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(f"cannot serialise {type(v).__name__}")


def _flatten(df: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts as JSON strings; datetimes stay (ISO in CSV, timestamps in Parquet)."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object and df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(
                lambda v: (
                    None
                    if v is None
                    else json.dumps(v, ensure_ascii=False)
                    if isinstance(v, (list, dict))
                    else v
                )
            )
    return df


# --------------------------------------------------------------------------------------------------
# Exports for download from the researcher's Export page
# --------------------------------------------------------------------------------------------------

EXPORT_ROOT = "workbench-exports"
EXPORT_KEEP_HOURS = 24


def export_for_download(engine: Engine, study_name: str, fmt: str, previous: dict | None = None) -> dict:
    """Export into a fresh folder under the temp directory for the page's download buttons. The
    ``previous`` export (of the same browser session) is deleted, and so is every export folder older
    than ``EXPORT_KEEP_HOURS``, so exports do not pile up on the server."""
    import shutil
    import tempfile

    from db.types import utcnow

    if fmt not in FORMATS:
        raise UserInputError("the export format is jsonl, csv or parquet")
    root = Path(tempfile.gettempdir()) / EXPORT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    if previous and previous.get("dir"):
        shutil.rmtree(previous["dir"], ignore_errors=True)
    _remove_old_exports(root)
    out = Path(tempfile.mkdtemp(prefix="export-", dir=root))
    try:
        files = export_study(engine, study_name, fmt, out)
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


def _remove_old_exports(root: Path) -> None:
    import shutil
    import time

    cutoff = time.time() - EXPORT_KEEP_HOURS * 3600
    for old in root.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed meanwhile by another session's clean-up
            pass


def export_files(done: dict) -> list[Path]:
    """The files of an ``export_for_download`` result that still exist."""
    return [p for p in map(Path, done.get("files", [])) if p.is_file()]
