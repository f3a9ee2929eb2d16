"""Adjudication: where annotators disagree, a researcher picks the final label.

``blind_items`` is the list as the adjudication page shows it: blind to who the user was, like the
labelling page (opaque item numbers in a random order per session, one display language).

The final labels form their own source ``adjudicated:<study>`` (kind "adjudicated"), so analyses
can use them as gold while the annotators' own labels stay untouched. Each adjudicated label keeps
the values it was chosen among in ``Label.samples`` ({"source", "value"} records) and who decided
in ``Label.rationale``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session, select

from annotation.codebook import Codebook
from annotation.labelling import language_coverage, preferred_language
from annotation.store import ensure_source
from db.errors import NotFoundError, UserInputError
from db.models import Conversation, Label, LabelSource, Turn
from db.repo import get_study
from db.types import utcnow

DISAGREEMENT_COLUMNS = [
    "conversation_id",
    "dimension",
    "turn_index",
    "n",
    "n_distinct",
    "values",
    "adjudicated",
    "status",
]

# ``status`` of an item: still to decide; decided while the annotators disagree; or decided earlier
# and since no longer disputed (an annotator changed their label or withdrew it by skipping). Such a
# stale decision stays listed, so that it can be seen and revisited: it is still the gold label.
OPEN = "open"
DECIDED = "decided"
DECIDED_NOW_AGREED = "decided; annotators now agree"
DECIDED_TOO_FEW = "decided; fewer than 2 labels now"
AGREED = "agreed"  # only with include_agreed: never disputed, never decided


def adjudicated_source_name(study_name: str) -> str:
    return f"adjudicated:{study_name}"


def _sources(session: Session, names: Iterable[str] | None) -> list[LabelSource]:
    if names is None:
        return list(
            session.exec(
                select(LabelSource).where(LabelSource.kind == "human").order_by(LabelSource.name)
            ).all()
        )
    names = list(names)
    found = {s.name: s for s in session.exec(select(LabelSource).where(LabelSource.name.in_(names))).all()}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFoundError(
            f"no label source(s) {', '.join(missing)} (list them with `workbench labels sources`)"
        )
    return [found[n] for n in names]


def disagreements_df(
    session: Session,
    study_name: str,
    sources: Iterable[str] | None = None,
    dimensions: Iterable[str] | None = None,
    include_agreed: bool = False,
) -> pd.DataFrame:
    """Items (conversation, dimension, turn) that two or more of ``sources`` labelled differently,
    plus every item already adjudicated (whether or not the annotators still disagree).

    ``sources`` defaults to every human annotator source. ``values`` maps source name -> value;
    ``adjudicated`` is the final value already chosen (None when still open); ``status`` is
    ``open``, ``decided``, or, for a decision whose annotators no longer disagree (one changed or
    withdrew a label), ``decided; annotators now agree`` / ``decided; fewer than 2 labels now``.
    ``include_agreed`` adds the items labelled alike by two or more sources (status ``agreed``).
    """
    study = get_study(session, study_name)
    srcs = _sources(session, sources)
    final = _final_values(session, study_name)
    if dimensions is not None:
        dimensions = list(dimensions)
        final = {key: v for key, v in final.items() if key[1] in dimensions}
    if not srcs and not final:
        return pd.DataFrame(columns=DISAGREEMENT_COLUMNS)
    by_id = {s.id: s.name for s in srcs}
    q = (
        select(Label.conversation_id, Label.dimension, Label.turn_index, Label.source_id, Label.value)
        .join(Conversation, Conversation.id == Label.conversation_id)
        .where(
            Conversation.study_id == study.id,
            Label.source_id.in_(list(by_id)),
            Label.status == "ok",
            Label.value.is_not(None),
        )
    )
    if dimensions is not None:
        q = q.where(Label.dimension.in_(dimensions))
    rows = session.exec(q).all() if srcs else []
    values_of: dict[tuple[int, str, int], dict[str, str]] = {}
    for conv, dim, idx, src, value in rows:
        values_of.setdefault((int(conv), dim, int(idx)), {})[by_id[src]] = value
    out = []
    for key in sorted(set(values_of) | set(final)):
        values = values_of.get(key, {})
        n_distinct = len(set(values.values()))
        decided = final.get(key)
        disputed = len(values) >= 2 and n_distinct >= 2
        if decided is not None:
            status = DECIDED if disputed else DECIDED_NOW_AGREED if len(values) >= 2 else DECIDED_TOO_FEW
        elif disputed:
            status = OPEN
        elif include_agreed and len(values) >= 2:
            status = AGREED
        else:
            continue
        conv, dim, idx = key
        out.append(
            {
                "conversation_id": conv,
                "dimension": dim,
                "turn_index": idx,
                "n": len(values),
                "n_distinct": n_distinct,
                "values": dict(sorted(values.items())),
                "adjudicated": decided,
                "status": status,
            }
        )
    return pd.DataFrame(out, columns=DISAGREEMENT_COLUMNS)


@dataclass(frozen=True)
class BlindItems:
    """The adjudication list as the page may show it (the same blindness as the labelling page).

    ``items`` has the columns of ``disagreements_df`` plus ``key`` (an opaque id of the item, for
    widgets), ``item_no`` (the conversation's number in a random order fixed by the salt: database
    ids, and their order, would tell imported agents from people), ``turn_role`` and ``turn_no`` (a
    turn-level item's turn counted among the conversation's turns of that role: "reply 2", not its
    index, which counts any hidden system turns; "" and 0 for a conversation-level item).
    ``conversation_id`` is for the page's calls only, never to be shown. ``language`` is the one
    display language for every item (as on the labelling page); ``coverage`` how many conversations
    exist whole in each language.
    """

    items: pd.DataFrame
    language: str
    coverage: dict[str, int] = field(default_factory=dict)
    n_conversations: int = 0

    def of(self, dimensions: Iterable[str] | None = None, open_only: bool = False) -> pd.DataFrame:
        """The items of ``dimensions`` (all when None or empty), only the open ones with ``open_only``."""
        df = self.items
        if dimensions:
            df = df[df["dimension"].isin(list(dimensions))]
        if open_only:
            df = df[df["status"] == OPEN]
        return df.reset_index(drop=True)

    def progress(self, dimensions: Iterable[str] | None = None) -> tuple[int, int, int]:
        """(settled, total, stale) among the items of ``dimensions``. Progress counts the items the
        annotators disagree on now; decisions on items they no longer disagree on (one changed or
        withdrew a label) are ``stale``: they stay listed with their status, to be revisited."""
        listed = self.of(dimensions)
        total = int(listed["status"].isin([OPEN, DECIDED]).sum())
        still_open = int((listed["status"] == OPEN).sum())
        return total - still_open, total, len(listed) - total


def annotator_of(source: str) -> str:
    """The annotator's name of a ``human:<name>`` source (other sources by their own name)."""
    return source.split(":", 1)[-1] if source.startswith("human:") else source


def decision_options(values: dict[str, str], dimension=None) -> list[str]:
    """The labels a decision chooses among: the dimension's (``dimension``: a codebook dimension)
    or, for a dimension the codebook no longer has, the values the annotators gave."""
    return list(dimension.labels) if dimension is not None else sorted(set(values.values()))


BLIND_COLUMNS = ["key", "item_no", "turn_role", "turn_no"]


def blind_items(
    session: Session,
    study_name: str,
    salt: str,
    codebook: Codebook | None = None,
    sources: Iterable[str] | None = None,
) -> BlindItems:
    """Every item of ``disagreements_df`` (all dimensions), numbered and ordered blind: by
    conversation in the order of a salted hash, then by dimension (codebook order) and turn."""
    study = get_study(session, study_name)
    df = disagreements_df(session, study_name, sources=sources)
    conv_ids = sorted({int(c) for c in df["conversation_id"]})
    if df.empty:
        return BlindItems(
            pd.DataFrame(columns=DISAGREEMENT_COLUMNS + BLIND_COLUMNS), study.language or "en", {}, 0
        )

    def digest(*parts) -> str:
        return hashlib.sha256("|".join(map(str, (salt, *parts))).encode()).hexdigest()

    number = {c: i + 1 for i, c in enumerate(sorted(conv_ids, key=digest))}
    turn_convs = sorted({int(c) for c, i in zip(df["conversation_id"], df["turn_index"]) if i >= 0})
    turn_no: dict[tuple[int, int], tuple[str, int]] = {}
    if turn_convs:
        seen: dict[tuple[int, str], int] = {}
        for c, idx, role in session.exec(
            select(Turn.conversation_id, Turn.index, Turn.role)
            .where(Turn.conversation_id.in_(turn_convs), Turn.role.in_(["user", "assistant"]))
            .order_by(Turn.conversation_id, Turn.index)
        ).all():
            seen[(c, role)] = seen.get((c, role), 0) + 1
            turn_no[(c, idx)] = (role, seen[(c, role)])
    order = {name: i for i, name in enumerate(codebook.names)} if codebook is not None else {}
    df = df.copy()
    df["key"] = [
        "adj-" + digest(c, d, i)[:16]
        for c, d, i in zip(df["conversation_id"], df["dimension"], df["turn_index"])
    ]
    df["item_no"] = [number[int(c)] for c in df["conversation_id"]]
    found = [turn_no.get((int(c), int(i))) for c, i in zip(df["conversation_id"], df["turn_index"])]
    df["turn_role"] = [f[0] if f else "" for f in found]  # "" (not None: pandas would make it NaN)
    df["turn_no"] = [f[1] if f else 0 for f in found]
    df["_dim_order"] = [order.get(d, len(order)) for d in df["dimension"]]
    df = df.sort_values(["item_no", "_dim_order", "dimension", "turn_index"]).drop(columns="_dim_order")
    return BlindItems(
        items=df.reset_index(drop=True),
        language=preferred_language(session, study, conv_ids),
        coverage=language_coverage(session, conv_ids),
        n_conversations=len(conv_ids),
    )


def _final_values(session: Session, study_name: str) -> dict[tuple[int, str, int], str]:
    src = session.exec(
        select(LabelSource).where(LabelSource.name == adjudicated_source_name(study_name))
    ).first()
    if src is None:
        return {}
    rows = session.exec(
        select(Label.conversation_id, Label.dimension, Label.turn_index, Label.value).where(
            Label.source_id == src.id
        )
    ).all()
    return {(int(c), d, int(i)): v for c, d, i, v in rows if v is not None}


def adjudicate(
    session: Session,
    study_name: str,
    conversation_id: int,
    dimension: str,
    value: str,
    codebook: Codebook,
    turn_index: int = -1,
    adjudicator: str | None = None,
    note: str | None = None,
    sources: Iterable[str] | None = None,
) -> Label:
    """Record the final label of one item under ``adjudicated:<study>``; replaces an earlier decision."""
    study = get_study(session, study_name)
    conv = session.get(Conversation, conversation_id)
    if conv is None or conv.study_id != study.id:
        raise NotFoundError(f"conversation {conversation_id} is not in study {study_name!r}")
    dim = codebook.get(dimension)
    value = str(value)
    if value not in dim.labels:
        raise UserInputError(f"{value!r} is not a label of {dimension} (use one of {', '.join(dim.labels)})")
    if (turn_index < 0) != (dim.level == "conversation"):
        raise UserInputError(
            f"{dimension} is {dim.level}-level: give {'no' if turn_index < 0 else 'a'} turn index"
        )
    turn_id = None
    if turn_index >= 0:
        turn = session.exec(
            select(Turn).where(Turn.conversation_id == conversation_id, Turn.index == turn_index)
        ).first()
        if turn is None:
            raise NotFoundError(f"conversation {conversation_id} has no turn {turn_index}")
        turn_id = turn.id
    srcs = _sources(session, sources)
    considered = session.exec(
        select(LabelSource.name, Label.value)
        .join(LabelSource, LabelSource.id == Label.source_id)
        .where(
            Label.conversation_id == conversation_id,
            Label.dimension == dimension,
            Label.turn_index == turn_index,
            Label.source_id.in_([s.id for s in srcs]),
        )
        .order_by(LabelSource.name)
    ).all()
    # ensure_source: a decision under a newer codebook updates the source's codebook version and
    # records when it took over (params["history"]), so every decision's codebook is known.
    final_src = ensure_source(
        session,
        adjudicated_source_name(study_name),
        "adjudicated",
        codebook_version=codebook.version,
        params={"study": study_name, "gold": True},
    )
    lab = session.exec(
        select(Label).where(
            Label.source_id == final_src.id,
            Label.conversation_id == conversation_id,
            Label.dimension == dimension,
            Label.turn_index == turn_index,
        )
    ).first()
    if lab is None:
        lab = Label(
            conversation_id=conversation_id,
            dimension=dimension,
            turn_index=turn_index,
            source_id=final_src.id,
        )
    who = f"adjudicated by {adjudicator}" if adjudicator else "adjudicated"
    note = (note or "").strip()
    lab.value, lab.turn_id, lab.status, lab.created_at = value, turn_id, "ok", utcnow()
    lab.rationale = f"{who}: {note}" if note else who
    lab.samples = [{"source": s, "value": v} for s, v in considered]
    session.add(lab)
    session.flush()
    return lab


def study_names_with_labels(session: Session) -> list[str]:
    """Studies that have human labels (the adjudication page's choices)."""
    from db.models import Study

    rows = session.exec(
        select(Study.name)
        .join(Conversation, Conversation.study_id == Study.id)
        .join(Label, Label.conversation_id == Conversation.id)
        .join(LabelSource, LabelSource.id == Label.source_id)
        .where(LabelSource.kind == "human")
        .distinct()
        .order_by(Study.name)
    ).all()
    return list(rows)
