"""Test support: not used by the product.

Synthetic studies with known differences between humans and agents, written as real database rows,
for the tests and the benchmarks (``benchmarks/bench_analysis.py``). No product module imports this
one (``tests/test_layering.py`` checks it). Nothing here is used on real data.

Example::

    make_study(engine, "synth", n_human=200, n_agent=200, seed=1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, insert, text
from sqlmodel import Session, select

from db.models import (
    Condition,
    Conversation,
    Label,
    Participant,
    Profile,
    Scenario,
    Study,
    TaskContext,
    Turn,
)
from db.repo import get_or_create_assistant_config, get_or_create_label_source, get_or_create_simulator_config
from db.types import utcnow

SCENARIOS = ["travel_planning", "recipe_planning", "preparing_gifts", "skills_learning_planning"]
# dimension -> (values, human probabilities, agent probabilities)
LABEL_MODEL = {
    "problem_solving": (["AllInOne", "StepByStep"], [0.3, 0.7], [0.75, 0.25]),
    "order": (
        ["Depth", "Breadth", "DepthBreadth", "BreadthDepth"],
        [0.3, 0.3, 0.2, 0.2],
        [0.28, 0.32, 0.2, 0.2],
    ),
    "question_broadness": (
        ["1", "2", "3", "4", "5"],
        [0.05, 0.1, 0.25, 0.35, 0.25],
        [0.15, 0.3, 0.3, 0.15, 0.1],
    ),
    "context_dependency": (
        ["1", "2", "3", "4", "5"],
        [0.1, 0.15, 0.25, 0.3, 0.2],
        [0.25, 0.3, 0.25, 0.15, 0.05],
    ),
    "explanation": (["Frequent", "Rare", "NoExplanation"], [0.1, 0.3, 0.6], [0.7, 0.2, 0.1]),
    "promise": (["HavePromise", "NoPromise"], [0.1, 0.9], [0.8, 0.2]),
    "feedback": (
        ["NoFeedback", "Positive", "Negative", "Both"],
        [0.6, 0.2, 0.1, 0.1],
        [0.02, 0.95, 0.01, 0.02],
    ),
    "politeness": (["Polite", "Neutral", "Impolite"], [0.15, 0.8, 0.05], [0.95, 0.05, 0.0]),
    "formality": (["Oral", "Formal", "Mixed"], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]),
    "utility": (["High", "Moderate", "Low"], [0.8, 0.15, 0.05], [0.82, 0.14, 0.04]),
    "operability": (["High", "Moderate", "Low"], [0.75, 0.2, 0.05], [0.77, 0.18, 0.05]),
}
HUMAN_TURNS = [
    "hotel near the station?",
    "cheaper one",
    "what about trains",
    "ok and food there?",
    "too far, something closer",
    "how long does it take",
    "any vegetarian places",
]
AGENT_TURNS = [
    "Thank you so much! Could you please suggest a comfortable hotel near the station?",
    "That sounds great! I'd love a few more budget-friendly options, please.",
    "Perfect, I'll go with that. Could you also recommend how to get there by train?",
    "Thanks! Could you please also suggest some local restaurants? I think that would help!",
    "Thank you, goodbye.",
]
ZH_HUMAN_TURNS = ["车站附近有酒店吗？", "便宜一点的", "火车怎么样", "那边吃什么", "太远了，近一点的"]


def _id_start(session: Session, model) -> int:
    return int(session.exec(select(func.max(model.id))).one() or 0) + 1


def _fix_sequence(session: Session, table: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.exec(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        )


PERSONAS = [
    "A vegetarian student who loves museums.",
    "A frugal engineer on a tight budget.",
    "An outgoing designer.",
]


@dataclass
class _Design:
    """The study's fixed rows: ids of its conditions ((scenario, profile index) -> id), participants,
    simulator configurations and label source."""

    study_id: int
    conditions: dict[tuple, int]  # (scenario, profile index[, assistant index]) -> condition id
    n_profiles: int
    n_assistants: int
    people: list[int]
    simulator_ids: list[int]
    source_id: int


@dataclass
class _NextIds:
    """The next free primary keys: rows are bulk-inserted with explicit ids (fast at 100k)."""

    conversation: int
    turn: int
    label: int


def _scenario_contexts(session: Session, name: str, scenarios: Sequence[str]) -> dict[str, tuple[int, int]]:
    """scenario key -> (scenario id, task context id); scenarios are reused, contexts are new."""
    out = {}
    for key in scenarios:
        scen = session.exec(select(Scenario).where(Scenario.key == key)).first()
        if scen is None:
            scen = Scenario(key=key, name=key.replace("_", " "), names={}, aspects=[])
            session.add(scen)
            session.flush()
        ctx = TaskContext(
            scenario_id=scen.id,
            key=f"{name}-ctx",
            language="en",
            text=f"Plan: {key}",
            translations={},
            slots={},
            source="custom",
        )
        session.add(ctx)
        session.flush()
        out[key] = (scen.id, ctx.id)
    return out


def _profiles(session: Session, name: str) -> list[int]:
    ids = []
    for i, persona in enumerate(PERSONAS):
        prof = Profile(
            key=f"{name}-profile-{i}", language="en", fields={}, text=persona, translations={}, source="pool"
        )
        session.add(prof)
        session.flush()
        ids.append(prof.id)
    return ids


def _design(
    session: Session,
    name: str,
    scenarios: Sequence[str],
    n_participants: int,
    simulators: int,
    label_source: str,
    assistants: int = 1,
) -> _Design:
    """Insert the study with its scenarios, profiles, conditions, participants and configurations."""
    study = Study(name=name, language="en", settings={}, source="created")
    session.add(study)
    session.flush()
    contexts = _scenario_contexts(session, name, scenarios)
    profiles = _profiles(session, name)
    # One assistant configuration keeps the historical key (scenario, profile); several add the index.
    helpers = [
        get_or_create_assistant_config(session, "scripted/assistant" if k == 0 else f"scripted/assistant-{k}")
        for k in range(assistants)
    ]
    sims = [
        get_or_create_simulator_config(
            session,
            f"scripted/sim-{k}",
            prompt_template="default",
            prompt_version=str(k + 1),
            name=f"sim-{k}",
        )
        for k in range(simulators)
    ]
    conditions = {}
    for key in scenarios:
        for j, pid in enumerate(profiles):
            for k, assistant in enumerate(helpers):
                cond = Condition(
                    study_id=study.id,
                    key=f"{key}-{j}" if assistants == 1 else f"{key}-{j}-a{k}",
                    scenario_id=contexts[key][0],
                    task_context_id=contexts[key][1],
                    profile_id=pid,
                    assistant_config_id=assistant.id,
                )
                session.add(cond)
                session.flush()
                conditions[(key, j) if assistants == 1 else (key, j, k)] = cond.id
    people = []
    for i in range(n_participants):
        p = Participant(study_id=study.id, pseudonym=f"{name}-p{i}", status="completed")
        session.add(p)
        session.flush()
        people.append(p.id)
    source = get_or_create_label_source(session, label_source, "llm", model="scripted/labeller")
    session.commit()
    return _Design(study.id, conditions, len(profiles), assistants, people, [s.id for s in sims], source.id)


def _turn_rows(rng, ids: _NextIds, conv_id: int, bank: list[str], n_user: int, now) -> list[dict]:
    """``n_user`` user turns drawn from ``bank``, each answered by the assistant."""
    rows = []
    for t in range(n_user):
        content = bank[int(rng.integers(len(bank)))]
        for role, body in (("user", content), ("assistant", f"Here is a suggestion number {t}.")):
            rows.append(
                {
                    "id": ids.turn,
                    "conversation_id": conv_id,
                    "index": 2 * t + (role == "assistant"),
                    "role": role,
                    "content": body,
                    "created_at": now,
                    "meta": {},
                }
            )
            ids.turn += 1
    return rows


def _label_rows(rng, ids: _NextIds, conv_id: int, kind: str, source_id: int, now) -> list[dict]:
    """One conversation-level label per ``LABEL_MODEL`` dimension, drawn from the kind's distribution."""
    rows = []
    for dim, (values, p_h, p_a) in LABEL_MODEL.items():
        rows.append(
            {
                "id": ids.label,
                "conversation_id": conv_id,
                "turn_index": -1,
                "dimension": dim,
                "value": values[int(rng.choice(len(values), p=p_h if kind == "human" else p_a))],
                "source_id": source_id,
                "flagged": False,
                "status": "ok",
                "created_at": now,
            }
        )
        ids.label += 1
    return rows


def _insert(engine, convs: list[dict], turns: list[dict], labels: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Conversation.__table__), convs)
        if turns:
            conn.execute(insert(Turn.__table__), turns)
        if labels:
            conn.execute(insert(Label.__table__), labels)


def make_study(
    engine,
    name: str = "synth",
    n_human: int = 120,
    n_agent: int = 120,
    scenarios: Sequence[str] = SCENARIOS,
    human_scenarios: Sequence[str] | None = None,
    n_participants: int = 12,
    simulators: int = 1,
    twins: bool = False,
    seed: int = 0,
    label_source: str = "llm:synthetic",
    human_language: str = "en",
    max_user_turns: int = 6,
    with_labels: bool = True,
    chunk: int = 20000,
    assistants: int = 1,
) -> int:
    """Insert a study with ``n_human`` human and ``n_agent`` agent conversations; returns its id.

    ``human_scenarios`` restricts humans to some scenarios (to test one-sided data); ``twins`` makes
    agent conversation i the digital twin of human conversation i (same condition); ``assistants``
    makes that many assistant configurations (conditions per scenario, profile and assistant; with
    more than one, each conversation draws its assistant after its profile).
    """
    # The random draws happen in a fixed order per conversation (condition, participant, turn
    # count, turns, labels): tests pin numbers that depend on it.
    rng = np.random.default_rng(seed)
    now = utcnow()
    human_scenarios = list(human_scenarios) if human_scenarios is not None else list(scenarios)
    with Session(engine) as session:
        design = _design(
            session, name, scenarios, n_participants if n_human else 0, simulators, label_source, assistants
        )
        ids = _NextIds(_id_start(session, Conversation), _id_start(session, Turn), _id_start(session, Label))
        plan = [("human", i) for i in range(n_human)] + [("agent", i) for i in range(n_agent)]
        human_cond: dict[int, tuple[int, int]] = {}  # human index -> (conversation id, condition id)
        for start in range(0, len(plan), chunk):
            convs, turns, labels = [], [], []
            for kind, i in plan[start : start + chunk]:
                if kind == "agent" and twins and i in human_cond:
                    twin_of, cond_id = human_cond[i]
                else:
                    twin_of = None
                    pool = human_scenarios if kind == "human" else list(scenarios)
                    key = (pool[rng.integers(len(pool))], int(rng.integers(design.n_profiles)))
                    if design.n_assistants > 1:
                        key = (*key, int(rng.integers(design.n_assistants)))
                    cond_id = design.conditions[key]
                lang = human_language if kind == "human" else "en"
                convs.append(
                    _conversation_row(rng, design, ids.conversation, kind, i, cond_id, twin_of, lang, now)
                )
                if kind == "human":
                    human_cond[i] = (ids.conversation, cond_id)
                n_user = int(
                    rng.integers(1, (max_user_turns if kind == "human" else min(4, max_user_turns)) + 1)
                )
                turns += _turn_rows(rng, ids, ids.conversation, _turn_bank(kind, lang), n_user, now)
                if with_labels:
                    labels += _label_rows(rng, ids, ids.conversation, kind, design.source_id, now)
                ids.conversation += 1
            _insert(engine, convs, turns, labels)
        for table in ("conversation", "turn", "label"):
            _fix_sequence(session, table)
        session.commit()
    return design.study_id


def _turn_bank(kind: str, lang: str) -> list[str]:
    if kind == "agent":
        return AGENT_TURNS
    return ZH_HUMAN_TURNS if lang.startswith("zh") else HUMAN_TURNS


def _conversation_row(
    rng, design: _Design, conv_id: int, kind: str, i: int, cond_id: int, twin_of: int | None, lang: str, now
) -> dict:
    return {
        "id": conv_id,
        "study_id": design.study_id,
        "condition_id": cond_id,
        "user_kind": kind,
        "participant_id": design.people[int(rng.integers(len(design.people)))] if kind == "human" else None,
        "simulator_config_id": design.simulator_ids[i % len(design.simulator_ids)]
        if kind == "agent"
        else None,
        "replicate": 0,
        "twin_of_id": twin_of,
        "status": "completed",
        "language": lang,
        "started_at": now,
        "ended_at": now,
        "source": "simulated" if kind == "agent" else "collected",
        "wave": kind,
        "meta": {},
        "external_id": None,
    }


# --------------------------------------------------------------------------------------------------
# The participants' instruments: per-reply ratings and post-task answers
# --------------------------------------------------------------------------------------------------

AVAILABILITY = ["unusable", "somewhat", "very_useful"]  # worst first


def _rating_targets(engine, study_id: int) -> tuple[list[dict], dict[int, list[int]]]:
    """The study's conversations (id, kind, participant, simulator name, twin, assistant config,
    scenario) and each conversation's assistant turn ids in order."""
    from sqlalchemy import select as core_select

    from db.models import Condition, SimulatorConfig

    conv, cond, sim, turn = (
        Conversation.__table__,
        Condition.__table__,
        SimulatorConfig.__table__,
        Turn.__table__,
    )
    q = (
        core_select(
            conv.c.id,
            conv.c.user_kind,
            conv.c.participant_id,
            sim.c.name,
            conv.c.twin_of_id,
            cond.c.assistant_config_id,
            cond.c.scenario_id,
        )
        .join(cond, cond.c.id == conv.c.condition_id)
        .outerjoin(sim, sim.c.id == conv.c.simulator_config_id)
        .where(conv.c.study_id == study_id)
        .order_by(conv.c.id)
    )
    keys = ["id", "kind", "participant_id", "simulator", "twin_of", "assistant", "scenario"]
    tq = (
        core_select(turn.c.conversation_id, turn.c.id)
        .join(conv, conv.c.id == turn.c.conversation_id)
        .where(conv.c.study_id == study_id, turn.c.role == "assistant")
        .order_by(turn.c.conversation_id, turn.c.index)
    )
    with engine.connect() as c:
        convs = [dict(zip(keys, r)) for r in c.execute(q).all()]
        replies: dict[int, list[int]] = {}
        for cid, tid in c.execute(tq).all():
            replies.setdefault(cid, []).append(tid)
    return convs, replies


def _people_like(rng, q: float, n: int) -> tuple[list[int], list[str]]:
    """People's model: satisfaction rises with the assistant's quality ``q`` and falls slowly over
    the replies; made-up flags are rarer for better assistants."""
    sat = [int(np.clip(round(3.0 + q - 0.15 * t + rng.normal(0, 0.7)), 1, 5)) for t in range(n)]
    p_yes = float(np.clip(0.2 - 0.08 * q, 0.02, 0.6))
    flags = [str(rng.choice(["yes", "no", "cant_tell"], p=[p_yes, 0.9 - p_yes, 0.1])) for _ in range(n)]
    return sat, flags


def _answers(rng, mode: str, sat: list[int]) -> dict[str, str]:
    if mode == "random":
        return {
            "Availability": AVAILABILITY[int(rng.integers(3))],
            "Memorization": str(rng.choice(["yes", "no"])),
            "Ease": str(int(rng.integers(1, 8))),
        }
    if mode == "positive":
        return {"Availability": "very_useful", "Memorization": "no", "Ease": "7"}
    m = float(np.mean(sat)) if sat else 3.0
    level = 2 if m + rng.normal(0, 0.4) >= 3.6 else 1 if m + rng.normal(0, 0.4) >= 2.4 else 0
    return {
        "Availability": AVAILABILITY[level],
        "Memorization": str(rng.choice(["yes", "no"], p=[0.3, 0.7])),
        "Ease": str(int(np.clip(round(m * 1.4 + rng.normal(0, 0.8)), 1, 7))),
    }


def add_instruments(
    engine,
    study_id: int,
    seed: int = 0,
    quality: Sequence[float] | None = None,
    modes: dict[str, str] | None = None,
    twin_noise: float = 0.1,
) -> None:
    """Give every assistant reply of a synthetic study the user's per-reply answers (satisfaction
    1-5, made-up information yes / no / cant_tell) and every conversation a post-task questionnaire
    (items Availability, Memorization, Ease 1-7), for people and simulated users alike; simulated
    users' turns carry ``meta["rated_by"] = "simulator"`` and their questionnaire rows no participant.

    ``quality``: each assistant configuration's quality (in id order; default evenly spread over
    [-1.2, 1.2]). ``modes``: simulator name -> "copy" (answers like people: the same model, and a
    twin copies its person's rating of the same reply, changed by one point with probability
    ``twin_noise``), "random" (uniform answers) or "positive" (always pleased); default "copy".
    """
    from sqlalchemy import bindparam, update

    from db.models import QuestionnaireResponse

    rng = np.random.default_rng(seed)
    convs, replies = _rating_targets(engine, study_id)
    assistants = sorted({c["assistant"] for c in convs})
    quality = list(quality) if quality is not None else list(np.linspace(-1.2, 1.2, max(len(assistants), 1)))
    q_of = dict(zip(assistants, quality))
    modes = modes or {}
    by_id: dict[int, list[int]] = {}
    turn_rows, answer_rows = [], []
    now = utcnow()
    for c in convs:
        ids = replies.get(c["id"], [])
        mode = "human" if c["kind"] == "human" else modes.get(c["simulator"], "copy")
        sat, flags = _people_like(rng, q_of[c["assistant"]], len(ids))
        if mode == "random":
            sat = [int(x) for x in rng.integers(1, 6, size=len(ids))]
            flags = [str(x) for x in rng.choice(["yes", "no", "cant_tell"], size=len(ids))]
        elif mode == "positive":
            sat, flags = [int(x) for x in rng.integers(4, 6, size=len(ids))], ["no"] * len(ids)
        elif mode == "copy" and c["twin_of"] in by_id:
            person = by_id[c["twin_of"]]
            for t in range(min(len(person), len(sat))):
                step = int(rng.choice([-1, 1])) if rng.random() < twin_noise else 0
                sat[t] = int(np.clip(person[t] + step, 1, 5))
        if c["kind"] == "human":
            by_id[c["id"]] = sat
        meta = {} if c["kind"] == "human" else {"rated_by": "simulator"}
        for tid, s, f in zip(ids, sat, flags):
            turn_rows.append({"tid": tid, "satisfaction": s, "hallucination": f, "meta": meta})
        for item, value in _answers(rng, mode if mode != "human" else "copy", sat).items():
            answer_rows.append(
                {
                    "study_id": study_id,
                    "conversation_id": c["id"],
                    "participant_id": c["participant_id"] if c["kind"] == "human" else None,
                    "questionnaire": "post_task",
                    "item": item,
                    "value": value,
                    "raw_value": value,
                    "question": None,
                    "created_at": now,
                }
            )
    turn = Turn.__table__
    stmt = (
        update(turn)
        .where(turn.c.id == bindparam("tid"))
        .values(
            satisfaction=bindparam("satisfaction"),
            hallucination=bindparam("hallucination"),
            meta=bindparam("meta"),
        )
    )
    with engine.begin() as conn:
        if turn_rows:
            conn.execute(stmt, turn_rows)
        if answer_rows:
            conn.execute(insert(QuestionnaireResponse.__table__), answer_rows)
