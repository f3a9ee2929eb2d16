"""Import a study exported by ``workbench export`` in any format (see ``workbench.dataio.export``).

Reads ``conversations.jsonl`` (the jsonl format) or, in a csv or parquet export, the ``records``
table holding the same lines; and, when they sit beside it, ``labels`` + ``label_sources``,
``questionnaires`` and ``participants`` (``.csv`` or ``.parquet``). Participant-level answers
(consent, profile: no conversation) go to their participant by pseudonym, and participants without
any conversation are kept. Conditions keep their keys, participants
their pseudonyms (a new one is drawn only if the pseudonym is taken in this database).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from db.errors import UserInputError
from db.models import Conversation, SimulationRun
from db.settings import DEFAULT_MAX_IMPORT_MB, DEFAULT_MAX_TURN_CHARS
from db.types import utcnow
from workbench.dataio.limits import check_file_size, check_turn_lengths, decode_utf8
from workbench.dataio.report import ImportReport, Progress
from workbench.dataio.writer import (
    AssistantSpec,
    ContextSpec,
    ConversationRecord,
    LabelSourceSpec,
    ParticipantSpec,
    ProfileSpec,
    ScenarioSpec,
    SimulatorSpec,
    write_participants,
    write_records,
)

TURN_FIELDS = (
    "translation",
    "translation_language",
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


class _Bad(Exception):
    pass


def import_jsonl(
    engine: Engine,
    path: str | Path,
    study: str | None = None,
    strict: bool = False,
    progress: Progress = None,
    max_turn_chars: int = DEFAULT_MAX_TURN_CHARS,
    max_file_mb: float = DEFAULT_MAX_IMPORT_MB,
) -> ImportReport:
    """Import ``path`` (a ``conversations.jsonl`` file or the directory holding it) into ``study``
    (default: the study named in the file). Malformed lines (and lines with a turn longer than
    ``max_turn_chars``) are skipped and reported; a file over ``max_file_mb`` megabytes or not in
    UTF-8 stops the import before anything is written."""
    t0 = time.perf_counter()
    file = _source_file(Path(path).expanduser())
    folder = file.parent
    for side in [file, *(folder / f"{t}.{ext}" for t in _SIDE_TABLES for ext in ("csv", "parquet"))]:
        check_file_size(side, max_file_mb)
    source_specs = _label_sources(_side_table(folder, "label_sources"))
    labels_by_conv = _labels_by_conv(_side_table(folder, "labels"), source_specs)
    answers_by_conv, answers_by_participant = _answers(_side_table(folder, "questionnaires"))
    people = _participants(_side_table(folder, "participants"))

    report = ImportReport(study=study or "")
    links = _Links()
    records = []
    for obj, rec in _read_lines(file, report, strict, max_turn_chars):
        if not report.study:
            report.study = obj.get("study") or "imported"
        rec.labels = labels_by_conv.get(obj["id"], [])
        rec.questionnaire = answers_by_conv.get(obj["id"], [])
        if rec.participant and rec.participant.pseudonym in people:
            rec.participant = people[rec.participant.pseudonym]
        records.append(rec)
        links.add(obj, rec)
    if not report.study:
        report.study = "imported"
    write_records(
        engine,
        records,
        report,
        description=f"Imported from {file}",
        single_transaction=strict,
        progress=progress,
    )
    _link_twins(engine, report, links.ext_of, links.twin_of)
    _link_runs(engine, report, links.runs, links.run_of)
    if report.study_id:
        write_participants(engine, report, people, answers_by_participant)
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class _Links:
    """What ties imported conversations to each other and to their runs, resolved after writing."""

    ext_of: dict[Any, str] = field(default_factory=dict)  # exported conversation id -> external id
    twin_of: dict[str, Any] = field(
        default_factory=dict
    )  # a twin's external id -> exported id of its original
    runs: dict[str, dict] = field(default_factory=dict)  # exported simulation run key -> the run as exported
    run_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # external id -> (run key, replicate)

    def add(self, obj: dict, rec: ConversationRecord) -> None:
        self.ext_of[obj["id"]] = rec.external_id
        if obj.get("twin_of") is not None:
            self.twin_of[rec.external_id] = obj["twin_of"]
        run = obj.get("run")
        if isinstance(run, dict) and isinstance(run.get("key"), str) and run["key"]:
            self.runs.setdefault(run["key"], run)
            self.run_of[rec.external_id] = (run["key"], obj.get("replicate") or 0)


_SIDE_TABLES = ("labels", "label_sources", "questionnaires", "participants")


def _source_file(p: Path) -> Path:
    """The file holding the conversation lines: ``conversations.jsonl`` (the jsonl format) or the
    ``records`` table of a csv or parquet export; ``p`` is that file or the export folder."""
    if p.is_dir():
        for name in ("conversations.jsonl", "records.csv", "records.parquet"):
            if (p / name).is_file():
                return p / name
        raise UserInputError(
            f"{p} holds no conversations.jsonl and no records.csv/records.parquet: give a folder "
            "written by `workbench export` (any format) or its conversations.jsonl"
        )
    if not p.is_file():
        raise UserInputError(f"{p} not found: give a conversations.jsonl written by `workbench export`.")
    return p


def _raw_lines(file: Path):
    """(line number, text) of the conversation lines: from a JSONL file, or the ``record`` column of
    a records table (row numbers as a spreadsheet shows them: the header is row 1)."""
    if file.suffix in (".csv", ".parquet"):
        table = _side_table(file.parent, file.stem, file.suffix[1:])
        if table is None or "record" not in table.columns:
            raise UserInputError(f"{file}: not a records table of `workbench export` (no 'record' column)")
        for n, text in enumerate(table["record"].tolist(), 2):
            yield n, _none(text) or ""
        return
    offset = 0
    with file.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            yield n, decode_utf8(raw, file, offset).removeprefix("\ufeff" if n == 1 else "")
            offset += len(raw)


def _read_lines(file: Path, report: ImportReport, strict: bool, max_turn_chars: int):
    """(line as JSON, its record) for each well-formed line; malformed lines are reported (or, with
    ``strict``, abort the import)."""
    for n, line in _raw_lines(file):
        if not line.strip():
            continue
        report.files += 1
        where = f"{file.name}:{n}"
        try:
            obj = json.loads(line)
            rec = _record(obj)
            check_turn_lengths(rec.turns, max_turn_chars, _Bad)
        except (json.JSONDecodeError, _Bad, KeyError, TypeError, ValueError) as exc:
            reason = (
                f"invalid JSON ({exc.msg})"
                if isinstance(exc, json.JSONDecodeError)
                else f"missing field {exc}"
                if isinstance(exc, KeyError)
                else str(exc)
            )
            if strict:
                raise UserInputError(f"{where}: {reason}. Nothing was imported (--strict).") from None
            report.malformed.append((where, reason))
            continue
        yield obj, rec


def _label_sources(sources) -> dict[str, LabelSourceSpec]:
    specs = {}
    for r in sources.to_dict("records") if sources is not None else []:
        specs[r["name"]] = LabelSourceSpec(
            name=r["name"],
            kind=r.get("kind") or "imported",
            model=_none(r.get("model")),
            prompt_version=_none(r.get("prompt_version")),
            codebook_version=_none(r.get("codebook_version")),
            params=_json(r.get("params")) or {},
        )
    return specs


def _labels_by_conv(labels, source_specs: dict[str, LabelSourceSpec]) -> dict[Any, list[dict]]:
    """The label rows per exported conversation id; a source missing from the sources table is
    added to ``source_specs``."""
    by_conv: dict[Any, list[dict]] = defaultdict(list)
    for r in labels.to_dict("records") if labels is not None else []:
        name = r["source"]
        spec = source_specs.get(name) or LabelSourceSpec(
            name=name, kind=_none(r.get("source_kind")) or "imported"
        )
        source_specs.setdefault(name, spec)
        by_conv[_int(r["conversation_id"])].append(
            {
                "dimension": r["dimension"],
                "value": _str(r.get("value")),
                "turn_index": _int(r["turn_index"]),
                "source": spec,
                "rationale": _none(r.get("rationale")),
                "samples": _json(r.get("samples")),
                "flagged": _bool(r.get("flagged")),
                "status": _none(r.get("status")) or "ok",
                "created_at": _time(r.get("created_at")),
            }
        )
    return by_conv


def _answers(answers) -> tuple[dict[Any, list[dict]], dict[str, list[dict]]]:
    """The answers per exported conversation id, and the participant-level ones (consent, profile:
    no conversation) per participant pseudonym. Ids are read whatever the table made of them
    (``4061``, ``4061.0`` in a CSV whose column also had blanks, a float in Parquet)."""
    by_conv: dict[Any, list[dict]] = defaultdict(list)
    by_participant: dict[str, list[dict]] = defaultdict(list)
    for r in answers.to_dict("records") if answers is not None else []:
        answer = {
            "questionnaire": r["questionnaire"],
            "item": str(r["item"]),
            "value": _str(r.get("value")),
            "raw_value": _str(r.get("raw_value")),
            "question": _none(r.get("question")),
            "created_at": _time(r.get("created_at")),
        }
        conv = _int(r.get("conversation_id"))
        if conv is not None:
            by_conv[conv].append(answer)
        elif _none(r.get("participant")) is not None:
            by_participant[str(r["participant"])].append(answer)
    return by_conv, by_participant


def _participants(table) -> dict[str, ParticipantSpec]:
    """The exported participants by pseudonym (the participants table of newer exports)."""
    out = {}
    for r in table.to_dict("records") if table is not None else []:
        pseudo = _none(r.get("participant"))
        if pseudo is None:
            continue
        out[str(pseudo)] = _participant_spec(
            str(pseudo), _none(r.get("language")) or "en", _none(r.get("status")) or "completed"
        )
    return out


def _participant_spec(pseudonym: str, language: str, status: str = "completed") -> ParticipantSpec:
    # Keyed by the exported pseudonym, so a re-import finds the participant again even where the
    # pseudonym itself had to be redrawn (taken by another study of this database).
    return ParticipantSpec(
        external_source="export",
        external_id=pseudonym,
        pseudonym=pseudonym,
        language=language,
        status=status,
    )


def _int(v: Any) -> int | None:
    v = _none(v)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return int(float(v))


def _link_twins(engine: Engine, report: ImportReport, ext_of: dict, twin_of: dict) -> None:
    """Restore digital-twin links (``twin_of`` holds the exported id of the human original). A twin
    whose original is not in the file keeps no link and is reported."""
    if not twin_of or not report.study_id:
        return
    with Session(engine) as session:
        ids = dict(
            session.exec(
                select(Conversation.external_id, Conversation.id).where(
                    Conversation.study_id == report.study_id,
                    Conversation.external_id.in_(list(twin_of) + list(ext_of.values())),
                )
            ).all()
        )
        for ext, original in twin_of.items():
            target = ids.get(ext_of.get(original))
            if ext not in ids:
                continue
            if target is None:
                report.warnings.append(
                    f"conversation {ext}: its twin original (id {original}) is not in the file; "
                    "imported without the twin link"
                )
                continue
            session.execute(
                update(Conversation.__table__)
                .where(Conversation.__table__.c.id == ids[ext])
                .values(twin_of_id=target)
            )
        session.commit()


def _link_runs(
    engine: Engine, report: ImportReport, runs: dict[str, dict], run_of: dict[str, tuple[str, int]]
) -> None:
    """Re-create the simulation runs of the exported agent conversations in the study (status, times
    and parameters as exported, the exported key in ``params["imported_from"]``) and link their
    conversations with their replicate numbers. Conversations already linked (a re-import) are left
    alone, and a re-import reuses the run it created before."""
    if not run_of or not report.study_id:
        return
    with Session(engine) as session:
        convs = session.exec(
            select(Conversation).where(
                Conversation.study_id == report.study_id, Conversation.external_id.in_(list(run_of))
            )
        ).all()
        todo: dict[str, list[Conversation]] = defaultdict(list)
        for conv in convs:
            if conv.run_id is None and conv.user_kind == "agent" and conv.simulator_config_id is not None:
                todo[run_of[conv.external_id][0]].append(conv)
        if not todo:
            return
        mine = {
            (r.params or {}).get("imported_from"): r
            for r in session.exec(
                select(SimulationRun).where(SimulationRun.study_id == report.study_id)
            ).all()
        }
        for key, members in todo.items():
            exported = runs[key]
            run = mine.get(key)
            if run is None:
                new_key, n = key[:64], 1
                while (
                    session.exec(select(SimulationRun.id).where(SimulationRun.key == new_key)).first()
                    is not None
                ):
                    suffix = f"-import{report.study_id}" + (f"-{n}" if n > 1 else "")
                    new_key, n = key[: 64 - len(suffix)] + suffix, n + 1
                params = exported.get("params") if isinstance(exported.get("params"), dict) else {}
                run = SimulationRun(
                    study_id=report.study_id,
                    key=new_key,
                    simulator_config_id=members[0].simulator_config_id,
                    params={**params, "imported_from": key},
                    status=str(exported.get("status") or "finished")[:40],
                    created_at=_time_or_none(exported.get("created_at")) or utcnow(),
                    finished_at=_time_or_none(exported.get("finished_at")),
                )
                session.add(run)
                session.flush()
            taken = set(
                session.exec(
                    select(Conversation.condition_id, Conversation.replicate).where(
                        Conversation.run_id == run.id
                    )
                ).all()
            )
            for conv in members:
                replicate = (
                    int(run_of[conv.external_id][1]) if str(run_of[conv.external_id][1]).isdigit() else 0
                )
                if (conv.condition_id, replicate) in taken:
                    report.warnings.append(
                        f"conversation {conv.external_id}: run {key} already has replicate "
                        f"{replicate} of its condition; imported without the run link"
                    )
                    continue
                taken.add((conv.condition_id, replicate))
                conv.run_id, conv.replicate = run.id, replicate
                session.add(conv)
        session.commit()


def _record(o: dict) -> ConversationRecord:
    """The record of one exported line; a malformed line raises _Bad (or KeyError for a missing
    field). The parts are read in a fixed order, so the first problem found is the one reported."""
    if not isinstance(o, dict):
        raise _Bad("a line is not a JSON object")
    if o.get("user_kind") not in ("human", "agent"):
        raise _Bad(f"user_kind {o.get('user_kind')!r} is not human or agent")
    turns = _turns(o)
    si = o.get("scenario_info") or {}
    scen = ScenarioSpec(key=o["scenario"], name=si.get("name") or o["scenario"], names=si.get("names") or {})
    tc = o["task_context"]
    ctx = ContextSpec(
        text=tc["text"],
        language=tc.get("language") or o.get("language") or "en",
        translations=tc.get("translations") or {},
        slots=tc.get("slots") or {},
        key=tc.get("key"),
        source=tc.get("source") or "imported",
    )
    prof = _profile(o.get("profile"))
    asst = _assistant(o.get("assistant") or {"model": o["assistant_model"]})
    sim = _simulator(o.get("simulator"))
    part = None
    if o.get("participant"):
        part = _participant_spec(str(o["participant"]), o.get("language") or "en")
    return ConversationRecord(
        external_id=o.get("external_id") or f"export:{o['id']}",
        user_kind=o["user_kind"],
        language=o.get("language") or "en",
        scenario=scen,
        context=ctx,
        assistant=asst,
        profile=prof,
        participant=part,
        simulator=sim,
        wave=o.get("wave"),
        status=o.get("status") or "completed",
        started_at=_time(o.get("started_at")),
        ended_at=_time(o.get("ended_at")),
        end_reason=o.get("end_reason"),
        ended_by=o.get("ended_by"),
        source=o.get("source") or "imported",
        meta=o.get("meta") or {},
        condition_key=o.get("condition_key"),
        turns=turns,
    )


def _turns(o: dict) -> list[dict]:
    """The turns of a line: ``messages`` (role, content) merged with the ``turns`` extras."""
    msgs = o["messages"]
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("content"), str)
        and m.get("role") in ("user", "assistant", "system")
        for m in msgs
    ):
        raise _Bad("'messages' must be a list of {role, content}")
    extras = o.get("turns") or [{} for _ in msgs]
    if len(extras) != len(msgs):
        raise _Bad("'turns' and 'messages' differ in length")
    turns = []
    for i, (m, x) in enumerate(zip(msgs, extras)):
        t = {
            "index": x.get("index", i),
            "role": m["role"],
            "content": m["content"],
            "created_at": _time(x.get("created_at")),
            "completed_at": _time(x.get("completed_at")),
        }
        t.update({k: x.get(k) for k in TURN_FIELDS if x.get(k) is not None})
        turns.append(t)
    return turns


def _profile(pr: dict | None) -> ProfileSpec | None:
    if not pr:
        return None
    return ProfileSpec(
        key=pr["key"],
        language=pr.get("language") or "en",
        fields=pr.get("fields") or {},
        text=pr.get("text"),
        translations=pr.get("translations") or {},
        source=pr.get("source") or "imported",
    )


def _assistant(a: dict) -> AssistantSpec:
    return AssistantSpec(
        model=a["model"],
        system_prompt=a.get("system_prompt"),
        temperature=a.get("temperature"),
        max_tokens=a.get("max_tokens"),
        version=a.get("version") or "1",
        params=a.get("params") or {},
        name=a.get("name"),
    )


def _simulator(sm: dict | None) -> SimulatorSpec | None:
    if not sm:
        return None
    return SimulatorSpec(
        model=sm["model"],
        prompt_template=sm.get("prompt_template"),
        prompt_version=sm.get("prompt_version") or "1",
        temperature=sm.get("temperature"),
        seed=sm.get("seed"),
        params=sm.get("params") or {},
        name=sm.get("name"),
    )


def _side_table(folder: Path, name: str, only: str | None = None) -> pd.DataFrame | None:
    if only != "parquet" and (folder / f"{name}.csv").is_file():
        path = folder / f"{name}.csv"
        with path.open("rb") as fh:
            # the whole file is checked: pandas would fail with a traceback on the first bad byte
            offset = 0
            for raw in fh:
                decode_utf8(raw, path, offset)
                offset += len(raw)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if only != "csv" and (folder / f"{name}.parquet").is_file():
        return pd.read_parquet(folder / f"{name}.parquet")
    return None


def _none(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    return v


def _str(v: Any) -> str | None:
    v = _none(v)
    return None if v is None else str(v)


def _bool(v: Any) -> bool:
    v = _none(v)
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _json(v: Any) -> Any:
    v = _none(v)
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _time_or_none(v: Any) -> datetime | None:
    try:
        return _time(v)
    except (TypeError, ValueError):
        return None


def _time(v: Any) -> datetime | None:
    v = _none(v)
    if v is None or v == "":
        return None
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, datetime):
        ts = v
    else:
        ts = datetime.fromisoformat(str(v))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts
