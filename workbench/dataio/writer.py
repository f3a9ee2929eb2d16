"""Bulk writer shared by the importers.

Importers turn their input into ``ConversationRecord``s (plain data, validated before anything is
written); ``write_records`` resolves the look-up rows (scenario, task context, profile, participant,
configs, conditions, label sources) through caches and inserts conversations, turns, labels and
questionnaire answers with multi-row INSERTs. Each conversation is written together with its turns,
labels and answers in one transaction; with ``single_transaction`` the whole import is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from db import repo
from db.models import (
    Condition,
    Conversation,
    Label,
    Participant,
    Profile,
    QuestionnaireResponse,
    Scenario,
    Study,
    TaskContext,
    Turn,
)
from db.types import utcnow
from workbench.dataio.report import ImportReport, Progress

CHUNK = 400  # conversations per transaction (non-strict mode)


@dataclass
class ScenarioSpec:
    key: str
    name: str
    names: dict = field(default_factory=dict)


@dataclass
class ContextSpec:
    text: str
    language: str
    translations: dict = field(default_factory=dict)
    slots: dict = field(default_factory=dict)
    key: str | None = None  # key to use when the context has to be created
    source: str = "imported"


@dataclass
class ProfileSpec:
    key: str | None  # None: derived from the participant ("participant-<pseudonym>")
    language: str
    fields: dict = field(default_factory=dict)
    text: str | None = None
    translations: dict = field(default_factory=dict)
    source: str = "imported"


@dataclass
class ParticipantSpec:
    external_source: str | None
    external_id: str | None
    language: str = "zh"
    pseudonym: str | None = None  # kept when given (JSONL round trip), else random
    status: str = "completed"


@dataclass
class AssistantSpec:
    model: str
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    version: str = "1"
    params: dict = field(default_factory=dict)
    name: str | None = None


@dataclass
class SimulatorSpec:
    model: str
    prompt_template: str | None = None
    prompt_version: str = "1"
    temperature: float | None = None
    seed: int | None = None
    params: dict = field(default_factory=dict)
    name: str | None = None


@dataclass
class LabelSourceSpec:
    name: str
    kind: str
    model: str | None = None
    prompt_version: str | None = None
    codebook_version: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class ConversationRecord:
    external_id: str
    user_kind: str
    language: str
    scenario: ScenarioSpec
    context: ContextSpec
    assistant: AssistantSpec
    profile: ProfileSpec | None = None
    participant: ParticipantSpec | None = None
    simulator: SimulatorSpec | None = None
    wave: str | None = None
    status: str = "completed"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    ended_by: str | None = None
    source: str = "imported"
    meta: dict = field(default_factory=dict)
    condition_key: str | None = None  # reuse this condition key when given
    turns: list[dict] = field(default_factory=list)  # Turn columns (index, role, content, ...)
    labels: list[dict] = field(default_factory=list)  # Label columns + "source" (LabelSourceSpec)
    questionnaire: list[dict] = field(default_factory=list)  # QuestionnaireResponse columns


def norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def short_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:10]


def _insert_ids(conn: Connection, table, rows: Sequence[dict]) -> list[int]:
    """Multi-row INSERT returning the new ids in the order of ``rows``."""
    if not rows:
        return []
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return [r[0] for r in conn.execute(stmt, list(rows)).all()]


class _Resolver:
    """Caches of look-up rows; creates missing ones inside the current transaction."""

    def __init__(self, session: Session, study: Study, report: ImportReport):
        self.s = session
        self.conn = session.connection()
        self.study = study
        self.report = report
        self.scenarios: dict[str, int] = {}
        self.contexts: dict[
            int, tuple[dict, dict, set]
        ] = {}  # scenario_id -> (by text, by translation, keys)
        self.profiles: dict[str, int] = {k: i for k, i in session.exec(select(Profile.key, Profile.id)).all()}
        self.participant_profiles: dict[tuple, tuple[int, str]] = {}
        self.participants: dict[tuple, tuple[int, str]] = {}
        for pid, src, ext, pseudo in session.exec(
            select(
                Participant.id, Participant.external_source, Participant.external_id, Participant.pseudonym
            ).where(Participant.study_id == study.id)
        ).all():
            self.participants[(src, ext)] = (pid, pseudo)
        self.assistants: dict[str, int] = {}
        self.simulators: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self.conditions: dict[str, int] = {
            k: i
            for k, i in session.exec(
                select(Condition.key, Condition.id).where(Condition.study_id == study.id)
            ).all()
        }

    # -- scenarios and task contexts --------------------------------------------------------------
    def scenario(self, spec: ScenarioSpec) -> int:
        if spec.key in self.scenarios:
            return self.scenarios[spec.key]
        row = self.s.exec(select(Scenario).where(Scenario.key == spec.key)).first()
        if row is None:
            # The scenario library has not been synced: a minimal row; syncing later fills it in.
            row = Scenario(key=spec.key, name=spec.name, names=spec.names, pack=None)
            self.s.add(row)
            self.s.flush()
            self.report.created["scenarios"] += 1
        self.scenarios[spec.key] = row.id
        return row.id

    def context(self, scenario_id: int, spec: ContextSpec) -> tuple[int, str]:
        if scenario_id not in self.contexts:
            by_text: dict[str, tuple[int, str]] = {}
            by_tr: dict[str, tuple[int, str]] = {}
            keys: set = set()
            for tc in self.s.exec(select(TaskContext).where(TaskContext.scenario_id == scenario_id)).all():
                by_text.setdefault((tc.language, norm_text(tc.text)), (tc.id, tc.key))
                by_text.setdefault(("*", norm_text(tc.text)), (tc.id, tc.key))
                for _lang, tr in (tc.translations or {}).items():
                    if isinstance(tr, str):
                        by_tr.setdefault(norm_text(tr), (tc.id, tc.key))
                keys.add(tc.key)
            self.contexts[scenario_id] = (by_text, by_tr, keys)
        by_text, by_tr, keys = self.contexts[scenario_id]
        t = norm_text(spec.text)
        hit = by_text.get((spec.language, t)) or by_text.get(("*", t)) or by_tr.get(t)
        if hit:
            return hit
        key = spec.key or f"imported-{spec.language}-{short_hash(t)}"
        if key in keys:  # same key, different text: keep both
            key = f"{key}-{short_hash(t)}"
        (tc_id,) = _insert_ids(
            self.conn,
            TaskContext.__table__,
            [
                {
                    "scenario_id": scenario_id,
                    "key": key,
                    "language": spec.language,
                    "text": spec.text,
                    "translations": spec.translations or {},
                    "slots": spec.slots or {},
                    "source": spec.source,
                }
            ],
        )
        self.report.created["task_contexts"] += 1
        by_text[(spec.language, t)] = (tc_id, key)
        by_text.setdefault(("*", t), (tc_id, key))
        keys.add(key)
        return tc_id, key

    # -- people -----------------------------------------------------------------------------------
    def participant(self, spec: ParticipantSpec) -> tuple[int, str]:
        k = (spec.external_source, spec.external_id)
        if spec.external_id is None and spec.pseudonym:
            k = ("pseudonym", spec.pseudonym)
        if k in self.participants:
            return self.participants[k]
        pseudo = spec.pseudonym or f"p{secrets.token_hex(6)}"
        existing = self.s.exec(select(Participant.id).where(Participant.pseudonym == pseudo)).first()
        if existing is not None:  # pseudonym taken (e.g. importing a JSONL twice into other studies)
            pseudo = f"p{secrets.token_hex(6)}"
        (pid,) = _insert_ids(
            self.conn,
            Participant.__table__,
            [
                {
                    "study_id": self.study.id,
                    "pseudonym": pseudo,
                    "external_source": spec.external_source,
                    "external_id": spec.external_id,
                    "status": spec.status,
                    "language": spec.language,
                    "state": {},
                    "created_at": utcnow(),
                }
            ],
        )
        self.report.created["participants"] += 1
        self.participants[k] = (pid, pseudo)
        return pid, pseudo

    def profile(self, spec: ProfileSpec, participant: tuple[int, str] | None) -> tuple[int, str]:
        if spec.key is None:
            # One profile per participant; a participant who filled it in differently twice gets two.
            assert participant is not None, "a participant profile needs a participant"
            pid, pseudo = participant
            sig = (pid, short_hash(spec.fields, spec.text))
            if sig in self.participant_profiles:
                return self.participant_profiles[sig]
            base = f"participant-{pseudo}"
            n = 1
            key = base
            while True:
                existing = self.s.exec(select(Profile).where(Profile.key == key)).first()
                if existing is None:
                    break
                if short_hash(existing.fields, existing.text) == sig[1]:
                    self.participant_profiles[sig] = (existing.id, key)
                    return existing.id, key
                n += 1
                key = f"{base}-{n}"
            prof_id = self._new_profile(key, spec)
            self.participant_profiles[sig] = (prof_id, key)
            self.conn.execute(
                Participant.__table__.update()
                .where(Participant.__table__.c.id == pid)
                .where(Participant.__table__.c.profile_id.is_(None))
                .values(profile_id=prof_id)
            )
            return prof_id, key
        if spec.key in self.profiles:
            return self.profiles[spec.key], spec.key
        return self._new_profile(spec.key, spec), spec.key

    def _new_profile(self, key: str, spec: ProfileSpec) -> int:
        (prof_id,) = _insert_ids(
            self.conn,
            Profile.__table__,
            [
                {
                    "key": key,
                    "language": spec.language,
                    "fields": spec.fields or {},
                    "text": spec.text,
                    "translations": spec.translations or {},
                    "source": spec.source,
                }
            ],
        )
        self.profiles[key] = prof_id
        self.report.created["profiles"] += 1
        return prof_id

    # -- configs and sources ----------------------------------------------------------------------
    def assistant(self, spec: AssistantSpec) -> int:
        fp = short_hash(spec.__dict__)
        if fp not in self.assistants:
            cfg = repo.get_or_create_assistant_config(
                self.s,
                model=spec.model,
                system_prompt=spec.system_prompt,
                temperature=spec.temperature,
                max_tokens=spec.max_tokens,
                version=spec.version,
                params=spec.params,
                name=spec.name,
            )
            self.assistants[fp] = cfg.id
        return self.assistants[fp]

    def simulator(self, spec: SimulatorSpec) -> int:
        fp = short_hash(spec.__dict__)
        if fp not in self.simulators:
            cfg = repo.get_or_create_simulator_config(
                self.s,
                model=spec.model,
                prompt_template=spec.prompt_template,
                prompt_version=spec.prompt_version,
                temperature=spec.temperature,
                seed=spec.seed,
                params=spec.params,
                name=spec.name,
            )
            self.simulators[fp] = cfg.id
        return self.simulators[fp]

    def source(self, spec: LabelSourceSpec) -> int:
        if spec.name not in self.sources:
            src = repo.get_or_create_label_source(
                self.s,
                spec.name,
                spec.kind,
                model=spec.model,
                prompt_version=spec.prompt_version,
                codebook_version=spec.codebook_version,
                params=spec.params,
            )
            self.sources[spec.name] = src.id
        return self.sources[spec.name]

    # -- conditions -------------------------------------------------------------------------------
    def condition_key(
        self,
        rec: ConversationRecord,
        ctx: tuple[int, str],
        profile: tuple[int, str] | None,
        assistant_id: int,
    ) -> str:
        key = rec.condition_key
        if not key:
            prof_key = profile[1] if profile else "-"
            key = f"{rec.scenario.key}|{ctx[1]}|{prof_key}|assistant{assistant_id}|{rec.language}"
            if len(key) > 300:
                key = key[:280] + "|" + short_hash(key)
        return key

    def create_conditions(self, rows: dict[str, dict]) -> None:
        """Insert the missing conditions of a chunk in one statement (one round trip on PostgreSQL)."""
        keys = list(rows)
        ids = _insert_ids(self.conn, Condition.__table__, [rows[k] for k in keys])
        self.conditions.update(zip(keys, ids))
        self.report.created["conditions"] += len(ids)


def ensure_study(session: Session, name: str, description: str, language: str, report: ImportReport) -> Study:
    study = session.exec(select(Study).where(Study.name == name)).first()
    if study is None:
        study = Study(name=name, description=description, language=language, settings={}, source="imported")
        session.add(study)
        session.flush()
        report.created["studies"] += 1
    return study


def existing_external_ids(session: Session, study_id: int) -> set[str]:
    return set(
        session.exec(
            select(Conversation.external_id)
            .where(Conversation.study_id == study_id)
            .where(Conversation.external_id.is_not(None))
        ).all()
    )


def write_records(
    engine: Engine,
    records: Iterable[ConversationRecord],
    report: ImportReport,
    description: str = "",
    language: str = "en",
    single_transaction: bool = False,
    progress: Progress = None,
) -> ImportReport:
    """Write new conversations (those whose external id the study lacks) with everything they need.
    With no records at all nothing is written, not even the study (a file where nothing was valid
    must not leave an empty study behind)."""
    records = list(records)
    if not records:
        report.warnings.append("no valid conversation: nothing was written")
        return report
    with Session(engine, expire_on_commit=False) as session:
        try:
            study = ensure_study(session, report.study, description, language, report)
            report.study_id = study.id
            have = existing_external_ids(session, study.id)
            new = []
            seen: set = set()
            for rec in records:
                if rec.external_id in have or rec.external_id in seen:
                    report.existing += 1
                else:
                    seen.add(rec.external_id)
                    new.append(rec)
            total = len(new)
            if progress:
                progress(0, total)
            done = 0
            for start in range(0, total, CHUNK):
                chunk = new[start : start + CHUNK]
                _write_chunk(session, study, chunk, report)
                if not single_transaction:
                    session.commit()
                done += len(chunk)
                if progress:
                    progress(done, total)
            session.commit()
        except BaseException:
            session.rollback()
            # Counts describe what was written; after a rollback of everything nothing was.
            raise
    return report


def _write_chunk(
    session: Session, study: Study, chunk: list[ConversationRecord], report: ImportReport
) -> None:
    res = getattr(session, "_dataio_resolver", None)
    if res is None or res.study.id != study.id:
        res = _Resolver(session, study, report)
        session._dataio_resolver = res  # type: ignore[attr-defined]
    res.conn = session.connection()
    conn = res.conn
    now = utcnow()
    conv_ids = _insert_conversations(res, study, chunk, now)
    turn_rows = [_turn_row(cid, t) for rec, cid in zip(chunk, conv_ids) for t in rec.turns]
    turn_ids = _insert_ids(conn, Turn.__table__, turn_rows)
    turn_id_of = {(r["conversation_id"], r["index"]): tid for r, tid in zip(turn_rows, turn_ids)}

    label_rows = []
    q_rows = []
    for rec, cid in zip(chunk, conv_ids):
        label_rows += [_label_row(res, cid, lab, turn_id_of, now) for lab in rec.labels]
        part_id = res.participant(rec.participant)[0] if rec.participant else None
        q_rows += [_questionnaire_row(study, cid, part_id, q, now) for q in rec.questionnaire]
    if label_rows:
        conn.execute(insert(Label.__table__), label_rows)
    if q_rows:
        conn.execute(insert(QuestionnaireResponse.__table__), q_rows)

    report.imported += len(chunk)
    for rec in chunk:
        report.conversations_by_kind[rec.user_kind] += 1
    report.turns += len(turn_rows)
    report.labels += len(label_rows)
    report.questionnaire_responses += len(q_rows)


def _insert_conversations(res: _Resolver, study: Study, chunk: list[ConversationRecord], now) -> list[int]:
    """Insert the chunk's conversations (and the conditions they need first); their ids in order."""
    conv_rows = []
    new_conditions: dict[str, dict] = {}
    for rec in chunk:
        scen_id = res.scenario(rec.scenario)
        ctx = res.context(scen_id, rec.context)
        part = res.participant(rec.participant) if rec.participant else None
        prof = res.profile(rec.profile, part) if rec.profile else None
        asst = res.assistant(rec.assistant)
        sim = res.simulator(rec.simulator) if rec.simulator else None
        cond_key = res.condition_key(rec, ctx, prof, asst)
        if cond_key not in res.conditions and cond_key not in new_conditions:
            new_conditions[cond_key] = {
                "study_id": study.id,
                "key": cond_key,
                "scenario_id": scen_id,
                "task_context_id": ctx[0],
                "profile_id": prof[0] if prof else None,
                "assistant_config_id": asst,
                "language": rec.language,
                "created_at": now,
            }
        conv_rows.append(_conversation_row(study, rec, cond_key, part, sim))
    if new_conditions:
        res.create_conditions(new_conditions)
    for row in conv_rows:
        row["condition_id"] = res.conditions[row["condition_id"]]
    return _insert_ids(res.conn, Conversation.__table__, conv_rows)


def _conversation_row(study: Study, rec: ConversationRecord, cond_key: str, part, sim) -> dict:
    # ``condition_id`` holds the condition's key until the conditions exist and it can be resolved.
    return {
        "study_id": study.id,
        "condition_id": cond_key,
        "user_kind": rec.user_kind,
        "participant_id": part[0] if part else None,
        "simulator_config_id": sim,
        "run_id": None,
        "replicate": 0,
        "twin_of_id": None,
        "status": rec.status,
        "language": rec.language,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "end_reason": rec.end_reason,
        "ended_by": rec.ended_by,
        "error": None,
        "prompt_version": None,
        "source": rec.source,
        "external_id": rec.external_id,
        "wave": rec.wave,
        "meta": rec.meta or {},
    }


def _turn_row(cid: int, t: dict) -> dict:
    return {
        "conversation_id": cid,
        "index": t["index"],
        "role": t["role"],
        "content": t["content"],
        "translation": t.get("translation"),
        "translation_language": t.get("translation_language"),
        "created_at": t.get("created_at"),
        "completed_at": t.get("completed_at"),
        "latency_ms": t.get("latency_ms"),
        "prompt_tokens": t.get("prompt_tokens"),
        "completion_tokens": t.get("completion_tokens"),
        "hallucination": t.get("hallucination"),
        "hallucination_note": t.get("hallucination_note"),
        "satisfaction": t.get("satisfaction"),
        "satisfaction_reason": t.get("satisfaction_reason"),
        "intent": t.get("intent"),
        "llm_call_id": None,
        "meta": t.get("meta") or {},
    }


def _label_row(res: _Resolver, cid: int, lab: dict, turn_id_of: dict, now) -> dict:
    ti = lab.get("turn_index", -1)
    return {
        "conversation_id": cid,
        "turn_index": ti,
        "turn_id": turn_id_of.get((cid, ti)) if ti >= 0 else None,
        "dimension": lab["dimension"],
        "value": lab.get("value"),
        "source_id": res.source(lab["source"]),
        "rationale": lab.get("rationale"),
        "samples": lab.get("samples"),
        "flagged": bool(lab.get("flagged", False)),
        "status": lab.get("status") or "ok",
        "created_at": lab.get("created_at") or now,
    }


def _questionnaire_row(study: Study, cid: int | None, part_id: int | None, q: dict, now) -> dict:
    return {
        "study_id": study.id,
        "conversation_id": cid,
        "participant_id": part_id,
        "questionnaire": q["questionnaire"],
        "item": q["item"],
        "value": q.get("value"),
        "raw_value": q.get("raw_value"),
        "question": q.get("question"),
        "created_at": q.get("created_at") or now,
    }


def write_participants(
    engine: Engine,
    report: ImportReport,
    people: dict[str, ParticipantSpec],
    answers: dict[str, list[dict]],
) -> None:
    """Add the participants of ``people`` the study lacks (those with no conversation: declined
    consent, dropped out before a task) and the participant-level answers (consent, profile) of each
    participant that has none yet, so a re-import adds nothing. Keys are exported pseudonyms."""
    with Session(engine, expire_on_commit=False) as session:
        study = session.get(Study, report.study_id)
        res = _Resolver(session, study, report)
        now = utcnow()
        rows = []
        for pseudo in list(people) + [p for p in answers if p not in people]:
            spec = people.get(pseudo) or ParticipantSpec("export", pseudo, language="en", pseudonym=pseudo)
            pid, _ = res.participant(spec)
            mine = answers.get(pseudo) or []
            has = session.exec(
                select(QuestionnaireResponse.id).where(
                    QuestionnaireResponse.participant_id == pid,
                    QuestionnaireResponse.conversation_id.is_(None),
                )
            ).first()
            if mine and has is None:
                rows += [_questionnaire_row(study, None, pid, q, now) for q in mine]
        if rows:
            res.conn.execute(insert(QuestionnaireResponse.__table__), rows)
            report.questionnaire_responses += len(rows)
        session.commit()
