"""Writing labeller outputs as Labels of one LabelSource (upsert, so re-running a labeller updates)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, select

from db.errors import UserInputError
from db.models import Label, LabelSource, Turn
from db.repo import get_or_create_label_source
from db.types import utcnow

SOURCE_KINDS = ("human", "llm", "imported", "rule", "trained", "adjudicated")


@dataclass
class LabelRecord:
    """One label to store; ``status`` is ok | skipped | failed (failed labels keep ``value=None``)."""

    conversation_id: int
    dimension: str
    value: str | None
    turn_index: int = -1
    rationale: str | None = None
    samples: list | None = None
    flagged: bool = False
    status: str = "ok"
    extra: dict = field(default_factory=dict)


def ensure_source(
    session: Session,
    name: str,
    kind: str,
    model: str | None = None,
    prompt_version: str | None = None,
    codebook_version: str | None = None,
    params: dict | None = None,
) -> LabelSource:
    """The LabelSource called ``name``, created on first use. An existing source of another kind is an
    error (two labellers must not write into one source).

    A later run of the same source with another codebook version or other ``params`` (e.g. more
    samples, another temperature, a codebook extension) updates the source and appends an entry to
    ``params["history"]`` (``from`` time, ``codebook_version``, ``params``), so the settings every label
    was made with follow from its ``created_at``."""
    if kind not in SOURCE_KINDS:
        raise UserInputError(f"unknown label source kind {kind!r} (kinds: {', '.join(SOURCE_KINDS)})")
    src = get_or_create_label_source(
        session,
        name,
        kind,
        model=model,
        prompt_version=prompt_version,
        codebook_version=codebook_version,
        params=params or {},
    )
    if src.kind != kind:
        raise UserInputError(f"label source {name!r} already exists with kind {src.kind!r}, not {kind!r}")
    _track_settings(session, src, codebook_version, params or {})
    return src


def _track_settings(session: Session, src: LabelSource, codebook_version: str | None, params: dict) -> None:
    """Record a change of codebook version or run parameters on an existing source (see ensure_source)."""
    old = dict(src.params or {})
    new_cb = codebook_version if codebook_version is not None else src.codebook_version
    changed = new_cb != src.codebook_version or any(old.get(k) != v for k, v in params.items())
    if not changed:
        return
    history = list(old.get("history") or [])
    if not history:  # the settings the source was created with, until now
        history.append(
            {
                "from": src.created_at.isoformat() if src.created_at else None,
                "codebook_version": src.codebook_version,
                "params": {k: old.get(k) for k in params},
            }
        )
    history.append({"from": utcnow().isoformat(), "codebook_version": new_cb, "params": dict(params)})
    src.params = {**old, **params, "history": history}
    src.codebook_version = new_cb
    session.add(src)


def existing_keys(session: Session, source_id: int, status: str | None = "ok") -> set[tuple[int, str, int]]:
    """(conversation_id, dimension, turn_index) already labelled by the source (with ``status``)."""
    q = select(Label.conversation_id, Label.dimension, Label.turn_index).where(Label.source_id == source_id)
    if status is not None:
        q = q.where(Label.status == status)
    return {tuple(r) for r in session.exec(q).all()}


def write_labels(session: Session, source: LabelSource, records: Iterable[LabelRecord]) -> int:
    """Insert or update the records as labels of ``source``; returns how many were written.
    The caller commits (so a batch is written whole or not at all)."""
    records = list(records)
    if not records:
        return 0
    conv_ids = sorted({r.conversation_id for r in records})
    existing = {}
    for chunk in range(0, len(conv_ids), 500):
        ids = conv_ids[chunk : chunk + 500]
        for lab in session.exec(
            select(Label).where(Label.source_id == source.id, Label.conversation_id.in_(ids))
        ).all():
            existing[(lab.conversation_id, lab.dimension, lab.turn_index)] = lab
    turn_ids = {}
    if any(r.turn_index >= 0 for r in records):
        for t in session.exec(
            select(Turn.id, Turn.conversation_id, Turn.index).where(Turn.conversation_id.in_(conv_ids))
        ).all():
            turn_ids[(t[1], t[2])] = t[0]
    now = utcnow()
    for r in records:
        lab = existing.get((r.conversation_id, r.dimension, r.turn_index))
        if lab is None:
            lab = Label(
                conversation_id=r.conversation_id,
                dimension=r.dimension,
                turn_index=r.turn_index,
                source_id=source.id,
            )
            session.add(lab)
        lab.turn_id = turn_ids.get((r.conversation_id, r.turn_index)) if r.turn_index >= 0 else None
        lab.value = None if r.value is None else str(r.value)
        lab.rationale, lab.samples, lab.flagged, lab.status = r.rationale, r.samples, r.flagged, r.status
        lab.created_at = now
    session.flush()
    return len(records)
