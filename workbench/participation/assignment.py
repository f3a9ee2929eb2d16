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

from sqlalchemy import update
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
    rows = session.exec(
        select(Condition, Profile.source)
        .outerjoin(Profile, Profile.id == Condition.profile_id)
        .where(Condition.study_id == study_id)
        .order_by(Condition.id)
    ).all()
    conds = [c for c, src in rows if src != "participant"]
    if language and any(c.language == language for c in conds):
        conds = [c for c in conds if c.language == language]
    return conds


def unit_loads(session: Session, study_id: int, mode: str) -> Counter:
    """How many live (not released) human assignments each unit holds."""
    rows = session.exec(
        select(Condition)
        .join(Assignment, Assignment.condition_id == Condition.id)
        .where(Condition.study_id == study_id, Assignment.status != "released")
    ).all()
    return Counter(_unit(c, mode) for c in rows)


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
    keys = dict(session.exec(select(Scenario.id, Scenario.key)).all())
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


def lock_study(session: Session, study_id: int) -> None:
    """Serialise assignment within a study until the caller's transaction ends.

    Without it, two participants who reach their first task at the same instant both read the same
    loads and can push a condition past its quota. A no-op UPDATE of the study row takes a row lock
    on PostgreSQL and the database write lock on SQLite (whose busy timeout makes the other wait),
    so the second participant reads the loads after the first one's assignments are committed.
    """
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
    row = len(
        session.exec(
            select(Assignment.participant_id)
            .join(Participant, Participant.id == Assignment.participant_id)
            .where(Participant.study_id == participant.study_id, Assignment.position == 0)
        ).all()
    )
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
