"""Annotators' queues: who labels which conversation, in which order.

``assign_items`` chooses conversations balanced across user kind and scenario (round robin over
the strata, random within each, seeded) and gives each to ``overlap`` annotators, balancing each
queue across user kinds, the load and the pairs, so every item gets k independent labels. Calling
it again adds new conversations; ``top_up=True`` gives queued conversations that lack annotators to
more of them (a late joiner); ``reassign_items`` moves a dropout's pending items to someone else.

Example::

    report = assign_items(session, "pilot", ["ann", "bob", "cy"], overlap=2, per_annotator=40)
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import NotFoundError, UserInputError
from db.models import Annotator, Condition, Conversation, Scenario, Study, Turn
from db.models.annotation import AnnotationAssignment
from db.models.core import UNFINISHED_STATUSES
from db.repo import get_study
from db.types import utcnow

USER_KINDS = ("human", "agent")


@dataclass
class AssignReport:
    study: str
    batch: str
    overlap: int
    n_items: int = 0
    per_annotator: dict[str, int] = field(default_factory=dict)  # new items per annotator
    per_stratum: dict[str, int] = field(default_factory=dict)  # "kind/scenario" -> items
    n_available: int = 0  # candidate items before sampling
    n_labellable: int = 0  # finished conversations with a user turn, of any kind, assigned or not
    n_of_kinds: int = 0  # of those, the chosen user kinds (all of them without a kind filter)
    user_kinds: list[str] | None = None
    top_up: bool = False

    def nothing_reason(self, top_up_hint: str = "top_up") -> str:
        """Why nothing was assigned, in words; ``top_up_hint`` names the top-up setting where it is
        suggested (a CLI passes its flag)."""
        if self.n_labellable == 0:
            return (
                "it has no finished conversation with a user turn to label (simulate or collect "
                "conversations first)"
            )
        if self.n_of_kinds == 0:
            kinds = " or ".join(self.user_kinds or [])
            return f"none of its {self.n_labellable} labellable conversations is a {kinds} conversation"
        if self.top_up:
            return (
                f"no conversation in a queue has fewer than {self.overlap} annotators that these "
                "annotators could add to"
            )
        return (
            "every labellable conversation is already in a queue (add annotators to queued "
            f"conversations with {top_up_hint})"
        )

    def summary(self) -> str:
        lines = [
            (
                f"Topped up {self.n_items} queued conversations towards {self.overlap} annotators each in study "
                f"{self.study!r} (batch {self.batch}; {self.n_available} candidates)."
                if self.top_up
                else f"Assigned {self.n_items} conversations x {self.overlap} annotators in study {self.study!r} "
                f"(batch {self.batch}; {self.n_available} candidates)."
            )
        ]
        for name, n in self.per_annotator.items():
            lines.append(f"  {name}: +{n}")
        for stratum, n in sorted(self.per_stratum.items()):
            lines.append(f"  {stratum}: {n} items")
        return "\n".join(lines)


def get_annotators(session: Session, names: Sequence[str]) -> list[Annotator]:
    """The accounts with these names, in order; unknown names are a UserInputError."""
    clean = [n.strip() for n in names if n and n.strip()]
    if not clean:
        raise UserInputError("no annotators given (annotators is empty)")
    dupes = sorted({n for n in clean if clean.count(n) > 1})
    if dupes:
        raise UserInputError(f"annotator(s) named twice: {', '.join(dupes)}")
    found = {a.name: a for a in session.exec(select(Annotator).where(Annotator.name.in_(clean))).all()}
    missing = [n for n in clean if n not in found]
    if missing:
        raise NotFoundError(
            f"no account for annotator(s) {', '.join(missing)}: create them with "
            "`workbench users add NAME --role annotator`"
        )
    inactive = [n for n in clean if not found[n].active]
    if inactive:
        raise UserInputError(f"annotator account(s) {', '.join(inactive)} are deactivated")
    return [found[n] for n in clean]


def candidates_df(
    session: Session, study: Study, conversation_ids: Iterable[int] | None = None
) -> pd.DataFrame:
    """Conversations that can be labelled: finished, with at least one user turn."""
    user_turns = (
        select(Turn.conversation_id, func.count(Turn.id).label("n"))
        .where(Turn.role == "user")
        .group_by(Turn.conversation_id)
        .subquery()
    )
    q = (
        select(Conversation.id, Conversation.user_kind, Scenario.key)
        .join(Condition, Condition.id == Conversation.condition_id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .join(user_turns, user_turns.c.conversation_id == Conversation.id)
        .where(Conversation.study_id == study.id)
        .where(Conversation.status.not_in(UNFINISHED_STATUSES))
        .order_by(Conversation.id)
    )
    if conversation_ids is not None:
        q = q.where(Conversation.id.in_(list(conversation_ids)))
    rows = session.exec(q).all()
    return pd.DataFrame(rows, columns=["conversation_id", "user_kind", "scenario"])


def _balanced_sample(cands: pd.DataFrame, n: int | None, rng: random.Random) -> list[int]:
    """Balanced across user kinds first, then across each kind's scenarios: the kinds take turns
    (the first one drawn with ``rng``), each kind goes round robin over its scenarios, and the order
    within a (kind, scenario) stratum is random. So any prefix (``n``) is as even as the data allow:
    4 items from agents and humans in 4 scenarios each are 2 + 2, not 4 agents."""
    per_kind: dict[str, list[int]] = {}
    for kind, kind_part in cands.groupby("user_kind", sort=True):
        strata = []
        for _, part in kind_part.groupby("scenario", sort=True):
            ids = part["conversation_id"].tolist()
            rng.shuffle(ids)
            strata.append(ids)
        order_k: list[int] = []
        while any(strata):
            for ids in strata:
                if ids:
                    order_k.append(ids.pop())
        per_kind[kind] = order_k
    kinds = sorted(per_kind)
    rng.shuffle(kinds)
    order: list[int] = []
    for i in range(max((len(v) for v in per_kind.values()), default=0)):
        order.extend(per_kind[k][i] for k in kinds if i < len(per_kind[k]))
    return order if n is None else order[:n]


def _pick(
    people,
    k: int,
    kind: str,
    have: set,
    kind_load: Counter,
    load: Counter,
    together: Counter,
    rng: random.Random,
    cap: int | None,
    new_load: Counter,
) -> list:
    """Up to ``k`` annotators for one item, picked one by one: fewest items of this user kind first
    (so no queue is mostly one kind, which would confound annotator with kind), then fewest items,
    then fewest items shared with those already on the item, then a random tie-break. ``have``:
    annotators already on the item; ``cap``: most new items per annotator."""
    picked: list = []
    for _ in range(k):
        rest = [
            p
            for p in people
            if p.id not in have and p not in picked and (cap is None or new_load[p.id] < cap)
        ]
        if not rest:
            break
        on_item = list(have) + [q.id for q in picked]
        best = min(
            rest,
            key=lambda p: (
                kind_load[(p.id, kind)],
                load[p.id],
                sum(together[(p.id, q)] for q in on_item),
                rng.random(),
            ),
        )
        picked.append(best)
    on_item = list(have) + [q.id for q in picked]
    for p in picked:
        load[p.id] += 1
        new_load[p.id] += 1
        kind_load[(p.id, kind)] += 1
        for q in on_item:
            if q != p.id:
                together[(p.id, q)] += 1
                together[(q, p.id)] += 1
    return picked


def _check_request(
    people: list, overlap: int, per_annotator: int | None, user_kinds: Sequence[str] | None, top_up: bool
) -> None:
    if overlap < 1:
        raise UserInputError("overlap must be at least 1")
    if overlap > len(people) and not top_up:
        raise UserInputError(f"overlap {overlap} needs at least {overlap} annotators (got {len(people)})")
    if per_annotator is not None and per_annotator < 1:
        raise UserInputError("per_annotator must be at least 1")
    unknown = sorted(set(user_kinds or []) - set(USER_KINDS))
    if unknown:
        raise UserInputError(
            f"unknown user kind {', '.join(map(repr, unknown))} in user_kinds: use {' or '.join(USER_KINDS)}"
        )


def _queues(session: Session, study: Study) -> tuple[dict[int, set[int]], dict[int, int]]:
    """(conversation -> annotators who have it, annotator -> next free position in their queue)."""
    existing = session.exec(
        select(
            AnnotationAssignment.conversation_id,
            AnnotationAssignment.annotator_id,
            AnnotationAssignment.position,
        ).where(AnnotationAssignment.study_id == study.id)
    ).all()
    assigned_to: dict[int, set[int]] = defaultdict(set)
    next_pos: dict[int, int] = defaultdict(int)
    for conv_id, ann_id, pos in existing:
        assigned_to[conv_id].add(ann_id)
        next_pos[ann_id] = max(next_pos[ann_id], pos + 1)
    return assigned_to, next_pos


def _open_candidates(
    cands: pd.DataFrame, assigned_to: dict[int, set[int]], people: list, overlap: int, top_up: bool
) -> pd.DataFrame:
    if top_up:
        # Items in queues that still lack annotators and that one of ``people`` does not have yet.
        mine = {p.id for p in people}
        return cands[
            [
                len(assigned_to.get(c, ())) < overlap
                and bool(mine - assigned_to.get(c, set()))
                and c in assigned_to
                for c in cands["conversation_id"]
            ]
        ]
    # New items are those nobody has yet.
    return cands[~cands["conversation_id"].isin(list(assigned_to))]


@dataclass
class _Loads:
    """Items per annotator, per (annotator, user kind), and shared per pair of annotators; and the
    new items per annotator of this batch."""

    load: Counter
    kind_load: Counter = field(default_factory=Counter)
    together: Counter = field(default_factory=Counter)
    new_load: Counter = field(default_factory=Counter)


def _current_loads(session: Session, study: Study, people: list, assigned_to, top_up: bool) -> _Loads:
    loads = _Loads(load=Counter({p.id: 0 for p in people}))
    if not top_up:
        return loads
    # What each already has in this study counts, so a late joiner is filled first.
    kinds_all = candidates_df(session, study).set_index("conversation_id")["user_kind"].to_dict()
    for conv_id, anns in assigned_to.items():
        for a in anns:
            loads.load[a] += 1
            loads.kind_load[(a, kinds_all.get(conv_id))] += 1
            for b in anns:
                if a != b:
                    loads.together[(a, b)] += 1
    return loads


def _distribute(
    chosen: list[int],
    cands: pd.DataFrame,
    people: list,
    assigned_to,
    loads: _Loads,
    rng: random.Random,
    cap: int | None,
    report: AssignReport,
) -> dict[int, list[int]]:
    """Annotators for each chosen item (annotator id -> new conversation ids); counts on ``report``."""
    kind_scen = cands.set_index("conversation_id")[["user_kind", "scenario"]].to_dict("index")
    new_items: dict[int, list[int]] = defaultdict(list)
    for conv_id in chosen:
        ks = kind_scen[conv_id]
        have = assigned_to.get(conv_id, set())
        picked = _pick(
            people,
            report.overlap - len(have),
            ks["user_kind"],
            have,
            loads.kind_load,
            loads.load,
            loads.together,
            rng,
            cap,
            loads.new_load,
        )
        if not picked:
            continue
        for p in picked:
            new_items[p.id].append(conv_id)
        stratum = f"{ks['user_kind']}/{ks['scenario']}"
        report.per_stratum[stratum] = report.per_stratum.get(stratum, 0) + 1
        report.n_items += 1
    return new_items


def _enqueue(
    session: Session,
    study: Study,
    people: list,
    new_items: dict[int, list[int]],
    next_pos: dict[int, int],
    rng: random.Random,
    report: AssignReport,
) -> None:
    for p in people:
        items = new_items[p.id]
        # Each annotator sees their items in their own random order (no shared order effects).
        rng.shuffle(items)
        for i, conv_id in enumerate(items):
            session.add(
                AnnotationAssignment(
                    study_id=study.id,
                    annotator_id=p.id,
                    conversation_id=conv_id,
                    position=next_pos[p.id] + i,
                    batch=report.batch,
                )
            )
        report.per_annotator[p.name] = len(items)
    session.flush()


def assign_items(
    session: Session,
    study_name: str,
    annotators: Sequence[str],
    overlap: int = 2,
    per_annotator: int | None = None,
    seed: int = 0,
    conversation_ids: Iterable[int] | None = None,
    user_kinds: Sequence[str] | None = None,
    top_up: bool = False,
) -> AssignReport:
    """Add conversations to the annotators' queues so each new item has ``overlap`` annotators.

    ``per_annotator``: new items per annotator (default: every unassigned conversation).
    ``top_up``: instead of new conversations, give conversations already in queues with fewer than
    ``overlap`` annotators to more of ``annotators`` (an annotator who joins late, or more overlap
    for agreement); the annotators with the fewest items in the study come first.
    """
    study = get_study(session, study_name)
    people = get_annotators(session, annotators)
    _check_request(people, overlap, per_annotator, user_kinds, top_up)
    cands = candidates_df(session, study, conversation_ids)
    n_labellable = len(cands)
    if user_kinds:
        cands = cands[cands["user_kind"].isin(list(user_kinds))]
    n_of_kinds = len(cands)
    assigned_to, next_pos = _queues(session, study)
    cands = _open_candidates(cands, assigned_to, people, overlap, top_up)
    report = AssignReport(
        study=study.name,
        batch=f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        overlap=overlap,
        n_available=len(cands),
        n_labellable=n_labellable,
        n_of_kinds=n_of_kinds,
        user_kinds=list(user_kinds) if user_kinds else None,
        top_up=top_up,
    )
    if cands.empty:
        report.per_annotator = {p.name: 0 for p in people}
        return report
    rng = random.Random(seed)
    loads = _current_loads(session, study, people, assigned_to, top_up)
    if top_up:
        chosen = _balanced_sample(cands, None, rng)
    else:
        n_items = None if per_annotator is None else (per_annotator * len(people)) // overlap
        chosen = _balanced_sample(cands, n_items, rng)
    cap = per_annotator if top_up else None
    new_items = _distribute(chosen, cands, people, assigned_to, loads, rng, cap, report)
    _enqueue(session, study, people, new_items, next_pos, rng, report)
    return report


def reassign_items(
    session: Session, study_name: str, from_annotator: str, to_annotator: str
) -> tuple[int, int]:
    """Move ``from_annotator``'s pending items (not labelled, not skipped) to ``to_annotator``, e.g.
    when an annotator drops out; items the other already has are dropped from the first queue
    instead. Returns (moved, dropped). What the first annotator labelled stays theirs."""
    study = get_study(session, study_name)
    a, b = get_annotators(session, [from_annotator, to_annotator])
    rows = session.exec(
        select(AnnotationAssignment).where(
            AnnotationAssignment.study_id == study.id, AnnotationAssignment.annotator_id.in_([a.id, b.id])
        )
    ).all()
    has_b = {r.conversation_id for r in rows if r.annotator_id == b.id}
    pos = max((r.position for r in rows if r.annotator_id == b.id), default=-1) + 1
    moved = dropped = 0
    for r in sorted(
        (r for r in rows if r.annotator_id == a.id and r.status == "pending"), key=lambda r: r.position
    ):
        if r.conversation_id in has_b:
            session.delete(r)
            dropped += 1
            continue
        r.annotator_id, r.position = b.id, pos
        pos += 1
        moved += 1
        session.add(r)
    session.flush()
    return moved, dropped


# --------------------------------------------------------------------------------------------------
# Reading a queue
# --------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    skipped: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.done - self.skipped

    @property
    def fraction(self) -> float:
        return (self.done + self.skipped) / self.total if self.total else 0.0


def queue_progress(session: Session, study_id: int, annotator_id: int) -> Progress:
    counts = dict(
        session.exec(
            select(AnnotationAssignment.status, func.count(AnnotationAssignment.id))
            .where(
                AnnotationAssignment.study_id == study_id, AnnotationAssignment.annotator_id == annotator_id
            )
            .group_by(AnnotationAssignment.status)
        ).all()
    )
    return Progress(total=sum(counts.values()), done=counts.get("done", 0), skipped=counts.get("skipped", 0))


def next_item(session: Session, study_id: int, annotator_id: int) -> AnnotationAssignment | None:
    """The first pending item of the queue (None when the queue is finished)."""
    return session.exec(
        select(AnnotationAssignment)
        .where(
            AnnotationAssignment.study_id == study_id,
            AnnotationAssignment.annotator_id == annotator_id,
            AnnotationAssignment.status == "pending",
        )
        .order_by(AnnotationAssignment.position)
    ).first()


def queue_items(session: Session, study_id: int, annotator_id: int) -> list[AnnotationAssignment]:
    return list(
        session.exec(
            select(AnnotationAssignment)
            .where(
                AnnotationAssignment.study_id == study_id, AnnotationAssignment.annotator_id == annotator_id
            )
            .order_by(AnnotationAssignment.position)
        ).all()
    )


def annotator_studies(session: Session, annotator_id: int) -> list[Study]:
    """Studies in which this annotator has a queue, newest first."""
    ids = session.exec(
        select(AnnotationAssignment.study_id)
        .where(AnnotationAssignment.annotator_id == annotator_id)
        .distinct()
    ).all()
    if not ids:
        return []
    return list(session.exec(select(Study).where(Study.id.in_(list(ids))).order_by(Study.id.desc())).all())


def reopen_skipped(session: Session, study_id: int, annotator_id: int) -> int:
    """Put the annotator's skipped items back in the queue; returns how many."""
    items = session.exec(
        select(AnnotationAssignment).where(
            AnnotationAssignment.study_id == study_id,
            AnnotationAssignment.annotator_id == annotator_id,
            AnnotationAssignment.status == "skipped",
        )
    ).all()
    for a in items:
        a.status = "pending"
        session.add(a)
    session.flush()
    return len(items)


def progress_df(session: Session, study_name: str) -> pd.DataFrame:
    """One row per annotator of the study: total, done, skipped, flagged, pending."""
    study = get_study(session, study_name)
    rows = session.exec(
        select(Annotator.name, AnnotationAssignment.status, AnnotationAssignment.flagged)
        .join(Annotator, Annotator.id == AnnotationAssignment.annotator_id)
        .where(AnnotationAssignment.study_id == study.id)
    ).all()
    cols = ["annotator", "total", "done", "skipped", "pending", "flagged"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows, columns=["annotator", "status", "flagged"])
    out = (
        df.groupby("annotator")
        .agg(
            total=("status", "size"),
            done=("status", lambda s: int((s == "done").sum())),
            skipped=("status", lambda s: int((s == "skipped").sum())),
            pending=("status", lambda s: int((s == "pending").sum())),
            flagged=("flagged", lambda s: int(s.sum())),
        )
        .reset_index()
    )
    return out[cols]
