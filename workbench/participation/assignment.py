"""Assigning conditions to participants: balanced with quotas, task order counterbalanced.

The balancing unit is a condition. In "participant" profile mode humans bring their own profile,
so the unit is the condition without its profile (scenario, task context, assistant config,
language), and each participant gets a *twin condition* carrying their own profile, under which
simulated users can later be run too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable

from sqlalchemy import func, or_, text, update
from sqlmodel import Session, select

from db.models import Assignment, Condition, Participant, Profile, Scenario, Study
from workbench.studies import StudySettings


def latin_square_order(k: int, row: int) -> list[int]:
    """Row ``row`` of a balanced Latin square of order ``k`` (Williams design).

    For even k each position and each first-order carry-over occurs equally often over k rows;
    for odd k this holds over 2k rows (the second k rows are the mirrored first k).
    """
    if k <= 0:
        return []
    base, lo, hi = [0], 1, k - 1
    while len(base) < k:
        base.append(lo)
        lo += 1
        if len(base) < k:
            base.append(hi)
            hi -= 1
    r = row % (k if k % 2 == 0 else 2 * k)
    seq = [(x + r) % k for x in base]
    return seq[::-1] if k % 2 == 1 and r >= k else seq


def _unit(cond: Condition, mode: str) -> Hashable:
    if mode == "participant":
        return (cond.scenario_id, cond.task_context_id, cond.assistant_config_id, cond.language)
    return cond.id


def base_conditions(session: Session, study_id: int, language: str | None = None) -> list[Condition]:
    """The study's designed conditions (not the participants' twin conditions)."""
    # The twin conditions (one per participant in "participant" profile mode) are left out by the
    # database: this runs under the study's assignment lock, and loading them all made each
    # assignment cost O(participants).
    conds = session.exec(
        select(Condition)
        .outerjoin(Profile, Profile.id == Condition.profile_id)
        .where(
            Condition.study_id == study_id,
            or_(Profile.source.is_(None), Profile.source != "participant"),
        )
        .order_by(Condition.id)
    ).all()
    if language and any(c.language == language for c in conds):
        conds = [c for c in conds if c.language == language]
    return conds


def unit_loads(session: Session, study_id: int, mode: str) -> Counter:
    """How many live (not released) human assignments each unit holds (counted by the database:
    one row per unit, not one per assignment)."""
    participant_mode = mode == "participant"
    cols = (
        (Condition.scenario_id, Condition.task_context_id, Condition.assistant_config_id, Condition.language)
        if participant_mode
        else (Condition.id,)
    )
    rows = session.exec(
        select(*cols, func.count())
        .join(Assignment, Assignment.condition_id == Condition.id)
        .where(Condition.study_id == study_id, Assignment.status != "released")
        .group_by(*cols)
    ).all()
    return Counter({(tuple(r[:-1]) if participant_mode else r[0]): r[-1] for r in rows})


def choose_conditions(session: Session, participant: Participant, settings: StudySettings) -> list[Condition]:
    """Pick the participant's conditions: least-loaded units under quota, different scenarios first."""
    mode = settings.profile_mode
    conds = base_conditions(session, participant.study_id, participant.language)
    reps: dict[Hashable, Condition] = {}
    for c in conds:
        reps.setdefault(_unit(c, mode), c)
    loads = unit_loads(session, participant.study_id, mode)
    rng = random.Random(participant.pseudonym)  # reproducible tie-breaking per participant
    candidates = []
    for unit, rep in reps.items():
        quota = rep.quota if rep.quota is not None else settings.quota_per_condition
        if quota is not None and loads[unit] >= quota:
            continue
        candidates.append((unit, rep, rng.random()))
    chosen: list[Condition] = []
    scenarios_used: set[int] = set()
    while candidates and len(chosen) < settings.tasks_per_participant:
        candidates.sort(key=lambda x: (x[1].scenario_id in scenarios_used, loads[x[0]], x[2]))
        unit, rep, _ = candidates.pop(0)
        chosen.append(rep)
        scenarios_used.add(rep.scenario_id)
    # A stable order before counterbalancing, so that the Latin square rows mean the same sequence.
    ids = {c.scenario_id for c in chosen}
    keys = (
        dict(session.exec(select(Scenario.id, Scenario.key).where(Scenario.id.in_(ids))).all()) if ids else {}
    )
    chosen.sort(key=lambda c: (keys.get(c.scenario_id, ""), c.id))
    return chosen


def twin_condition(session: Session, base: Condition, participant: Participant) -> Condition:
    """The condition of ``base`` with the participant's own profile (get or create)."""
    key = f"{base.key}|{participant.pseudonym}"[:300]
    cond = session.exec(
        select(Condition).where(Condition.study_id == base.study_id, Condition.key == key)
    ).first()
    if cond is None:
        cond = Condition(
            study_id=base.study_id,
            key=key,
            scenario_id=base.scenario_id,
            task_context_id=base.task_context_id,
            profile_id=participant.profile_id,
            assistant_config_id=base.assistant_config_id,
            language=base.language,
        )
        session.add(cond)
        session.flush()
    return cond


# First key of the PostgreSQL advisory lock that serialises assignment within a study (the second is
# the study id); any other advisory lock of the workbench uses another first key.
ASSIGNMENT_LOCK_NS = 17001


def lock_study(session: Session, study_id: int) -> None:
    """Serialise assignment within a study until the caller's transaction ends.

    Without it, two participants who reach their first task at the same instant both read the same
    loads and can push a condition past its quota. On PostgreSQL it is a transaction-level advisory
    lock keyed by the study (no row is written, so the study row gets no new version per participant
    and nothing else that touches the study waits); on SQLite a no-op UPDATE of the study row takes
    the database write lock (whose busy timeout makes the other wait). Either way the second
    participant reads the loads after the first one's assignments are committed.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": ASSIGNMENT_LOCK_NS, "id": study_id}
        )
        return
    session.execute(
        update(Study.__table__).where(Study.__table__.c.id == study_id).values(id=Study.__table__.c.id)
    )


def assign(session: Session, participant: Participant, settings: StudySettings) -> list[Assignment]:
    """Record the participant's assignments (positions in counterbalanced order). Holds the study's
    assignment lock (``lock_study``) until the caller commits."""
    lock_study(session, participant.study_id)
    existing = session.exec(
        select(Assignment).where(Assignment.participant_id == participant.id).order_by(Assignment.position)
    ).all()
    if existing:
        return list(existing)
    chosen = choose_conditions(session, participant, settings)
    if not chosen:
        return []
    # Row of the Latin square = how many participants of the study were assigned before.
    row = session.exec(
        select(func.count())
        .select_from(Assignment)
        .join(Participant, Participant.id == Assignment.participant_id)
        .where(Participant.study_id == participant.study_id, Assignment.position == 0)
    ).one()
    order = latin_square_order(len(chosen), row)
    out = []
    for position, idx in enumerate(order):
        cond = chosen[idx]
        if settings.profile_mode == "participant" and participant.profile_id is not None:
            cond = twin_condition(session, cond, participant)
        a = Assignment(participant_id=participant.id, condition_id=cond.id, position=position)
        session.add(a)
        out.append(a)
    session.flush()
    return out
