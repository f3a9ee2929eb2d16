"""The batch runner: many simulated conversations, resumable, with limits, a budget and provenance.

A run is described by a ``SimulationSpec`` and identified by ``SimulationRun.key``, a hash of what
of it defines its results (``SimulationSpec.run_key``: study, simulator config, assistant override,
condition selection, twin mode); each conversation by (run, condition, replicate). Running the same command again resumes: complete conversations are kept, the others are
started again from the beginning (the response cache makes the replayed calls free).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db import repo
from db.errors import UserInputError
from db.leases import owner_alive, process_owner
from db.models import (
    AssistantConfig,
    Condition,
    Conversation,
    Label,
    LLMCall,
    Participant,
    Profile,
    QuestionnaireResponse,
    Scenario,
    SimulationRun,
    SimulatorConfig,
    Study,
    TaskContext,
    Turn,
)
from db.types import utcnow
from db.worker import DatabaseWorker
from workbench.llm import LLMError, get_model, recorded
from workbench.llm.prices import price_of
from workbench.participation.questionnaires import study_questionnaires
from workbench.simulation import claims
from workbench.simulation.conversation import ConversationResult, Ratings, TurnRecord, run_conversation
from workbench.simulation.rating import PURPOSE as RATING_PURPOSE
from workbench.simulation.rating import (
    Rater,
    RatingTemplate,
    load_rating_template,
    rated_items,
    simulator_raw_value,
)
from workbench.simulation.spec import SimulationSpec
from workbench.simulation.templates import PromptTemplate, load_template
from workbench.simulation.user import SimulatedUser, UserContext
from workbench.studies import StudySettings, study_settings

_CONV = Conversation.__table__
_TURN = Turn.__table__
_LABEL = Label.__table__
_CALL = LLMCall.__table__
_ANSWER = QuestionnaireResponse.__table__
# LLMCall.params["attempt"] of the calls of a conversation's attempt that a restart threw away (a
# killed, stopped or failed attempt): kept for the record, counted apart from the current attempt.
ABANDONED = "abandoned"
_INSERT_TURN = insert(_TURN)
# Typical message sizes (tokens) for dry-run projections.
EST_USER_TOKENS = 40
EST_ASSISTANT_TOKENS = 400
EST_RATING_TOKENS = 60  # a per-reply rating answer; a post-task answer: 20 per item


@dataclass
class Job:
    condition_id: int
    replicate: int
    twin_of_id: int | None = None


@dataclass
class Setup:
    """A spec resolved against the database."""

    spec: SimulationSpec
    study: Study
    template: PromptTemplate
    simulator_config_id: int
    assistant_override_id: int | None
    jobs: list[Job]
    key: str
    min_turns: int
    max_turns: int
    configs: dict  # assistant_config_id -> AssistantConfig
    conditions: dict  # condition_id -> Condition
    twins_skipped: int = 0  # unfinished human sessions left out of "twin of all"
    # With ratings on: the rating prompt and the study's post-task items the simulated user answers.
    rating_template: RatingTemplate | None = None
    post_task_items: list = field(default_factory=list)

    @property
    def simulator_model(self) -> str:
        return self.spec.simulator_model


@dataclass
class Plan:
    run_key: str
    n_conversations: int
    n_done: int
    n_remaining: int
    calls: int
    calls_max: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cost_usd_max: float | None
    models: list[str]
    twins_skipped: int = 0
    rating_calls: int = 0  # of ``calls``: the simulated user's ratings and post-task answers

    def lines(self) -> list[str]:
        cost = (
            "unknown (no price for a model; see WORKBENCH_PRICES)"
            if self.cost_usd is None
            else f"${self.cost_usd:,.2f} (up to ${self.cost_usd_max:,.2f} if every conversation runs to max turns)"
        )
        return [
            f"run {self.run_key[:12]}: {self.n_conversations} conversations, {self.n_done} already complete, "
            f"{self.n_remaining} to run",
            f"projected calls: {self.calls:,} (at most {self.calls_max:,})" + self._ratings_note(),
            f"projected tokens: {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion",
            f"projected cost: {cost}",
            f"models: {', '.join(self.models)}",
        ] + _skipped_line(self.twins_skipped)

    def _ratings_note(self) -> str:
        if not self.rating_calls:
            return ""
        return f", {self.rating_calls:,} of them the simulated user's ratings (--no-ratings skips them)"


@dataclass
class Progress:
    total: int
    done: int = 0  # completed (including those complete before this invocation)
    failed: int = 0
    in_flight: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class RunSummary:
    run_id: int
    run_key: str
    total: int
    completed: int
    failed: int
    skipped: int  # complete before this invocation
    not_started: int
    cost_usd: float
    calls: int
    budget_stopped: bool
    seconds: float
    status: str
    twins_skipped: int = 0
    failed_calls: int = 0  # of ``calls``
    shared: bool = False  # several processes on the run: ``skipped`` includes the others' work

    def lines(self) -> list[str]:
        before = "before this run or by other processes" if self.shared else "before this run"
        return _skipped_line(self.twins_skipped) + [
            f"run {self.run_key[:12]} (id {self.run_id}): {self.status}",
            f"{self.completed}/{self.total} complete ({self.skipped} {before}), {self.failed} failed, "
            f"{self.not_started} not run",
            f"{self.calls} calls ({self.failed_calls} failed), ${self.cost_usd:.4f}, {self.seconds:.1f}s",
        ]


def _skipped_line(n: int) -> list[str]:
    if not n:
        return []
    sessions = "session was" if n == 1 else "sessions were"
    return [
        f"{n} unfinished human {sessions} not twinned (abandoned, screened out or still running; "
        "include_unfinished / --include-unfinished twins them too)"
    ]


# --------------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------------


def _study(session: Session, study: str | int) -> Study:
    """The study by name or id."""
    if isinstance(study, int):
        s = session.get(Study, study)
        if s is None:
            raise UserInputError(f"no study with id {study}")
        return s
    return repo.get_study(session, study)


def _select_conditions(session: Session, study: Study, conditions: Sequence[str] | None) -> list[Condition]:
    rows = session.exec(select(Condition).where(Condition.study_id == study.id).order_by(Condition.id)).all()
    if not conditions:
        # Twin conditions (per-participant profiles) are simulated through twin mode only.
        designed = [c for c in rows if "|" not in c.key]
        if rows and not designed:
            # Every condition belongs to one conversation (imported data, participants' own profiles).
            raise UserInputError(
                f"study {study.name!r} has no designed conditions to simulate: its {len(rows)} conditions each "
                "belong to one conversation (imported or with a participant's own profile). Simulate "
                "digital twins of its human conversations instead (--twin-of all; on the Simulation "
                "page: 'Digital twins'), or name conditions with --conditions"
            )
        return designed
    scen = dict(session.exec(select(Scenario.id, Scenario.key)).all())
    chosen, seen = [], set()
    for spec in conditions:
        spec = str(spec).strip()
        hit = [
            c
            for c in rows
            if c.key == spec
            or str(c.id) == spec
            or scen.get(c.scenario_id) == spec
            or c.key.startswith(spec + ":")
        ]
        if not hit:
            raise UserInputError(
                f"no condition {spec!r} in study {study.name!r}: give condition keys or ids "
                f"(e.g. {rows[0].key if rows else 'none'}) or scenario keys"
            )
        for c in hit:
            if c.id not in seen:
                seen.add(c.id)
                chosen.append(c)
    return chosen


def _twin_jobs(
    session: Session, study: Study, twin_of: Sequence[int | str], n: int, include_unfinished: bool = False
) -> tuple[list[Job], int]:
    """Jobs copying the conditions of the human conversations ``twin_of`` (ids or ``["all"]``), and
    how many unfinished ones "all" left out. A session that did not finish (abandoned, screened out,
    still running) is no model of a person's whole conversation, so it is only twinned when asked."""
    if list(twin_of) == ["all"]:
        convs = session.exec(
            select(Conversation)
            .where(Conversation.study_id == study.id, Conversation.user_kind == "human")
            .order_by(Conversation.id)
        ).all()
        if not convs:
            raise UserInputError(
                f"study {study.name!r} has no human conversations yet, so there is nothing to "
                "twin: collect human sessions (or import them) first"
            )
        kept = [c for c in convs if include_unfinished or _finished(session, c)]
        skipped = len(convs) - len(kept)
        if not kept:
            raise UserInputError(
                f"none of the {len(convs)} human conversations of study {study.name!r} was finished: "
                "set include_unfinished (--include-unfinished) to twin unfinished sessions"
            )
    else:
        kept, skipped = [_named_twin(session, study, int(i), include_unfinished) for i in sorted(twin_of)], 0
    jobs, per_condition = [], {}
    for conv in kept:
        k = per_condition.get(conv.condition_id, 0)
        per_condition[conv.condition_id] = k + 1
        jobs += [Job(conv.condition_id, k * n + r, twin_of_id=conv.id) for r in range(n)]
    return jobs, skipped


def _finished(session: Session, conv: Conversation) -> bool:
    """A completed conversation of a participant who was not screened out."""
    if conv.status != "completed":
        return False
    person = session.get(Participant, conv.participant_id) if conv.participant_id else None
    return person is None or person.status != "screened_out"


def _named_twin(session: Session, study: Study, cid: int, include_unfinished: bool) -> Conversation:
    conv = session.get(Conversation, cid)
    if conv is None or conv.study_id != study.id or conv.user_kind != "human":
        raise UserInputError(f"conversation {cid} is not a human conversation of study {study.name!r}")
    if not include_unfinished and not _finished(session, conv):
        raise UserInputError(
            f"conversation {cid} is unfinished ({conv.status}): set include_unfinished "
            "(--include-unfinished) to twin it anyway"
        )
    return conv


def _setup(session: Session, spec: SimulationSpec) -> Setup:
    """Resolve ``spec`` against the database: the study, the jobs (conditions x replicates, or
    twins), the simulator and assistant configs (created when new) and the run key."""
    template = load_template(spec.prompt)
    st = _study(session, spec.study)
    min_t, max_t = _turn_limits(spec, study_settings(st))
    sim_cfg = _simulator_config(session, spec, template, min_t, max_t)
    jobs, twins_skipped = _jobs(session, st, spec)
    cond_ids = sorted({j.condition_id for j in jobs})
    conds = {c.id: c for c in session.exec(select(Condition).where(Condition.id.in_(cond_ids))).all()}
    configs = {
        a.id: a
        for a in session.exec(
            select(AssistantConfig).where(
                AssistantConfig.id.in_({c.assistant_config_id for c in conds.values()})
            )
        ).all()
    }
    override_id = _assistant_override(session, spec, conds, configs)
    rating = load_rating_template() if spec.ratings else None
    key = spec.run_key(st.id, sim_cfg.fingerprint, override_id, rating.label if rating else None)
    session.commit()
    return Setup(
        spec,
        st,
        template,
        sim_cfg.id,
        override_id,
        jobs,
        key,
        min_t,
        max_t,
        configs,
        conds,
        twins_skipped,
        rating,
        _post_task_items(st) if rating else [],
    )


def _post_task_items(study: Study) -> list:
    """The study's post-task items the simulated user answers (as its participants do)."""
    return rated_items(study_questionnaires(study_settings(study).questionnaires).items("post_task"))


def _turn_limits(spec: SimulationSpec, settings: StudySettings) -> tuple[int, int]:
    """(min, max) user turns: the spec's, else the study's settings."""
    max_t = settings.max_turns if spec.max_turns is None else spec.max_turns
    if spec.min_turns is not None and spec.max_turns is None and spec.min_turns > max_t:
        # Both given: the spec checked them already.
        raise UserInputError(
            f"min turns ({spec.min_turns}) is greater than max turns ({max_t}, the study's setting)"
        )
    # The study's own minimum gives way to a lower max_turns.
    min_t = min(settings.min_turns if spec.min_turns is None else spec.min_turns, max_t)
    return min_t, max_t


def _simulator_config(
    session: Session, spec: SimulationSpec, template: PromptTemplate, min_t: int, max_t: int
) -> SimulatorConfig:
    return repo.get_or_create_simulator_config(
        session,
        spec.simulator_model,
        prompt_template=template.name,
        prompt_version=template.version,
        temperature=spec.temperature,
        seed=spec.seed,
        params={
            "min_turns": min_t,
            "max_turns": max_t,
            "goal_reminder_every": spec.goal_reminder_every,
            **({"max_tokens": spec.simulator_max_tokens} if spec.simulator_max_tokens else {}),
        },
    )


def _jobs(session: Session, study: Study, spec: SimulationSpec) -> tuple[list[Job], int]:
    """The jobs of the run and how many unfinished human sessions were not twinned."""
    if spec.twin_of:
        return _twin_jobs(session, study, spec.twin_of, spec.n_per_condition, spec.include_unfinished)
    chosen = _select_conditions(session, study, spec.conditions)
    if not chosen:
        raise UserInputError(f"study {study.name!r} has no conditions to simulate")
    return [Job(c.id, r) for c in chosen for r in range(spec.n_per_condition)], 0


def _assistant_override(session: Session, spec: SimulationSpec, conds: dict, configs: dict) -> int | None:
    """The config of ``spec.assistant_model`` (added to ``configs``), or None without one."""
    if not spec.assistant_model:
        return None
    # Same system prompt and sampling as the study's assistant, another model.
    base = configs[next(iter(conds.values())).assistant_config_id]
    o = repo.get_or_create_assistant_config(
        session,
        spec.assistant_model,
        system_prompt=base.system_prompt,
        temperature=base.temperature,
        max_tokens=base.max_tokens,
        version=base.version,
        params=base.params,
    )
    configs[o.id] = o
    return o.id


# --------------------------------------------------------------------------------------------------
# One process per run
# --------------------------------------------------------------------------------------------------

# A run's owner counts as gone when its process is gone (same machine) or, on another machine, after
# db.leases.SILENCE without a claim, a finished conversation or a new turn.
_RUN = SimulationRun.__table__


def claim_run(engine: Engine, run_id: int, key: str, me: str) -> None:
    """Make ``me`` the run's owner, or refuse (UserInputError) while another live process works on
    it: two processes on one run would restart each other's conversations. The swap is one
    conditional UPDATE, so of two processes claiming at once exactly one wins."""
    with engine.begin() as conn:
        owner, heartbeat = conn.execute(
            select(_RUN.c.owner, _RUN.c.heartbeat_at).where(_RUN.c.id == run_id)
        ).one()
        if owner and owner != me:
            last_turn = conn.execute(
                select(func.max(_TURN.c.created_at))
                .select_from(_TURN.join(_CONV, _CONV.c.id == _TURN.c.conversation_id))
                .where(_CONV.c.run_id == run_id)
            ).scalar()
            latest = max((t for t in (heartbeat, last_turn) if t is not None), default=None)
            if owner_alive(owner, latest):
                host, pid, _ = owner.rsplit(":", 2)
                raise UserInputError(
                    f"simulation run {key} is already running in another process (pid {pid} on {host}); "
                    "wait for it to finish, or stop that process and run the same command again to resume"
                )
        claimed = conn.execute(
            update(_RUN)
            .where(
                _RUN.c.id == run_id,
                _RUN.c.owner.is_(None) if not owner else _RUN.c.owner == owner,
            )
            .values(owner=me, heartbeat_at=utcnow(), status="running", finished_at=None)
        ).rowcount
    if claimed != 1:
        raise UserInputError(
            f"simulation run {key} was just started by another process; wait for it to finish"
        )


def _start_run(engine: Engine, su: Setup, me: str, params: dict) -> None:
    """Create the run owned by ``me``, or claim the existing one (``claim_run``). Two processes
    creating it at once: the loser of the unique key claims the winner's run, and is refused."""
    with Session(engine) as s:
        run_id = s.exec(select(SimulationRun.id).where(SimulationRun.key == su.key)).first()
    if run_id is None:
        try:
            with Session(engine) as s:
                s.add(
                    SimulationRun(
                        study_id=su.study.id,
                        key=su.key,
                        simulator_config_id=su.simulator_config_id,
                        assistant_config_id=su.assistant_override_id,
                        owner=me,
                        heartbeat_at=utcnow(),
                        params=params,
                    )
                )
                s.commit()
            return
        except IntegrityError:  # another process created the same run a moment ago
            with Session(engine) as s:
                run_id = s.exec(select(SimulationRun.id).where(SimulationRun.key == su.key)).one()
    claim_run(engine, run_id, su.key, me)


def _existing(engine: Engine, key: str) -> tuple[int | None, dict]:
    with Session(engine) as s:
        run = s.exec(select(SimulationRun).where(SimulationRun.key == key)).first()
        if run is None:
            return None, {}
        rows = s.exec(
            select(
                Conversation.condition_id, Conversation.replicate, Conversation.id, Conversation.status
            ).where(Conversation.run_id == run.id)
        ).all()
        return run.id, {(c, r): (i, st) for c, r, i, st in rows}


# --------------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------------


def _projection(n: int, turns: int, sim_sys: int, asst_sys: int, asst_out: int) -> tuple[int, int, int]:
    """(calls, prompt tokens, completion tokens) of ``n`` conversations of ``turns`` user turns."""
    calls = prompt = completion = 0
    for t in range(turns):
        history = t * (EST_USER_TOKENS + asst_out)
        prompt += sim_sys + 20 + history  # simulator call
        prompt += asst_sys + history + EST_USER_TOKENS  # assistant call
        completion += EST_USER_TOKENS + 10 + asst_out
        calls += 2
    return calls * n, prompt * n, completion * n


def _cost(model: str, prompt: int, completion: int, prices_file: str | None = None) -> float | None:
    p = price_of(model, prices_file)
    return None if p is None else (prompt * p["input"] + completion * p["output"]) / 1e6


def plan_simulation(engine: Engine, spec: SimulationSpec) -> Plan:
    """Projected calls, tokens and cost of a run (nothing is called; nothing but configs is written)."""
    with Session(engine, expire_on_commit=False) as s:
        su = _setup(s, spec)
    _, existing = _existing(engine, su.key)
    remaining = [j for j in su.jobs if existing.get((j.condition_id, j.replicate), (0, ""))[1] != "completed"]
    totals, models = _project(su, remaining)
    unknown = totals["unknown"]
    return Plan(
        su.key,
        len(su.jobs),
        len(su.jobs) - len(remaining),
        len(remaining),
        totals["calls"],
        totals["calls_max"],
        totals["p"],
        totals["c"],
        None if unknown else totals["cost"],
        None if unknown else totals["cost_max"],
        sorted(models),
        su.twins_skipped,
        totals["rating_calls"],
    )


def _project(su: Setup, remaining: list[Job]) -> tuple[dict, set[str]]:
    """Totals over the ``remaining`` jobs at the expected and at the maximum number of turns, and
    the models they use; ``unknown`` is set when a model has no price."""
    sim_sys = len(su.template.part("en", "system", profile="x" * 400, task="x" * 400)) // 4
    expected = max(su.min_turns, round((su.min_turns + su.max_turns) / 2))
    totals = {"calls": 0, "calls_max": 0, "p": 0, "c": 0, "cost": 0.0, "cost_max": 0.0, "unknown": False}
    totals["rating_calls"] = 0
    rating_base = _rating_prompt_tokens(su)
    models = {su.simulator_model}
    for j in remaining:
        cfg = su.configs[su.assistant_override_id or su.conditions[j.condition_id].assistant_config_id]
        models.add(cfg.model)
        asys = len(cfg.system_prompt or "") // 4
        aout = min(cfg.max_tokens or EST_ASSISTANT_TOKENS, EST_ASSISTANT_TOKENS)
        for turns, suffix in ((expected, ""), (su.max_turns, "_max")):
            calls, p, c = _projection(1, turns, sim_sys, asys, aout)
            sim_p = p // 2
            cost_s = _cost(su.simulator_model, sim_p, (EST_USER_TOKENS + 10) * turns, su.spec.prices_file)
            cost_a = _cost(cfg.model, p - sim_p, aout * turns, su.spec.prices_file)
            r_calls, r_p, r_c = _rating_projection(su, rating_base, turns, aout)
            cost_r = _cost(su.simulator_model, r_p, r_c, su.spec.prices_file) if r_calls else 0.0
            if cost_s is None or cost_a is None or cost_r is None:
                totals["unknown"] = True
            else:
                totals["cost" + suffix] += cost_s + cost_a + cost_r
            totals["calls" + suffix] += calls + r_calls
            if not suffix:
                totals["p"] += p + r_p
                totals["c"] += c + r_c
                totals["rating_calls"] += r_calls
    return totals, models


def _rating_prompt_tokens(su: Setup) -> int:
    """The tokens of a rating prompt without the conversation (0 with ratings off)."""
    t = su.rating_template
    if t is None:
        return 0
    return (len(t.part("en", "system", profile="x" * 400, task="x" * 400)) + len(t.part("en", "reply"))) // 4


def _rating_projection(su: Setup, base: int, turns: int, asst_out: int) -> tuple[int, int, int]:
    """(calls, prompt tokens, completion tokens) of one conversation's ratings: one call per
    assistant reply (its prompt holds the conversation so far) and one post-task call."""
    if su.rating_template is None:
        return 0, 0, 0
    calls, prompt = turns, 0
    for t in range(1, turns + 1):
        prompt += base + t * (EST_USER_TOKENS + asst_out)
    completion = turns * EST_RATING_TOKENS
    n_items = len(su.post_task_items)
    if n_items:
        calls += 1
        prompt += base + turns * (EST_USER_TOKENS + asst_out) + 40 * n_items
        completion += 20 * n_items
    return calls, prompt, completion


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits over a sliding 60 s window."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None):
        self.rpm, self.tpm = rpm, tpm
        self.calls: deque = deque()
        self.tokens: deque = deque()
        self.token_sum = 0
        self.lock = asyncio.Lock()

    def _trim(self, now: float) -> None:
        while self.calls and now - self.calls[0] >= 60:
            self.calls.popleft()
        while self.tokens and now - self.tokens[0][0] >= 60:
            self.token_sum -= self.tokens.popleft()[1]

    async def acquire(self) -> None:
        if not self.rpm and not self.tpm:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self._trim(now)
                waits = []
                if self.rpm and len(self.calls) >= self.rpm:
                    waits.append(60 - (now - self.calls[0]))
                if self.tpm and self.token_sum >= self.tpm and self.tokens:
                    waits.append(60 - (now - self.tokens[0][0]))
                if not waits:
                    self.calls.append(now)
                    return
                await asyncio.sleep(max(0.01, min(waits)))

    def record(self, tokens: int) -> None:
        if self.tpm:
            self.tokens.append((time.monotonic(), tokens))
            self.token_sum += tokens


class BudgetExceeded(Exception):
    pass


def _user_context(s: Session, cond: Condition, min_t: int, max_t: int, reminder: int | None) -> UserContext:
    tc = s.get(TaskContext, cond.task_context_id)
    lang = cond.language or "en"
    task = tc.text if (tc.language or "en") == lang else ((tc.translations or {}).get(lang) or tc.text)
    profile = None
    if cond.profile_id:
        p = s.get(Profile, cond.profile_id)
        profile = ((p.translations or {}).get(lang) if (p.language or "en") != lang else None) or p.text
        if not profile and p.fields:
            profile = "\n".join(
                f"- {k.replace('_', ' ')}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in p.fields.items()
                if v
            )
    return UserContext(
        task=task,
        profile=profile,
        language=lang,
        min_turns=min_t,
        max_turns=max_t,
        goal_reminder_every=reminder,
    )


def _params(cfg: AssistantConfig) -> dict:
    return {
        k: v for k, v in (("temperature", cfg.temperature), ("max_tokens", cfg.max_tokens)) if v is not None
    }


def run_simulation(
    engine: Engine,
    spec: SimulationSpec,
    progress: Callable[[Progress], None] | None = None,
    model_options: dict | None = None,
) -> RunSummary:
    """Run (or resume) a batch of simulated conversations; every turn is written as it happens.

    ``progress`` is called as conversations start and end; ``model_options`` maps a model name to
    keyword arguments for building its client (retries, timeouts, an HTTP transport).
    """
    return asyncio.run(arun_simulation(engine, spec, progress=progress, model_options=model_options))


async def arun_simulation(
    engine: Engine,
    spec: SimulationSpec,
    progress: Callable[[Progress], None] | None = None,
    model_options: dict | None = None,
) -> RunSummary:
    """``run_simulation`` inside a running event loop."""
    t_start = time.monotonic()
    with Session(engine, expire_on_commit=False) as s:
        su = _setup(s, spec)
        contexts = {
            cid: _user_context(s, c, su.min_turns, su.max_turns, spec.goal_reminder_every)
            for cid, c in su.conditions.items()
        }
    sim_model, asst_models = _build_models(su, model_options or {})
    if spec.budget is not None:
        _check_prices({su.simulator_model, *asst_models}, spec.prices_file)
    me = process_owner()
    rating_label = su.rating_template.label if su.rating_template else None
    joined = _start_or_join(
        engine, su, me, spec.run_params(su.min_turns, su.max_turns, su.template.label, rating_label)
    )
    # Read after the claim: what is done is what no other process can still be changing.
    run_id, existing = _existing(engine, su.key)
    shared = claims.shares_runs(engine)
    make = _SharedBatch if shared else _Batch
    batch = make(engine, su, contexts, run_id, me, existing, sim_model, asst_models, progress)
    if shared:
        _seed_shared(engine, batch, joined)
    batch.report()
    since = utcnow()
    try:
        await batch.run()
    finally:
        for model in (sim_model, *asst_models.values()):
            await model.aclose()
        final = batch.final_status()
        (_finish_shared_run if shared else _finish_run)(engine, run_id, me, final)
    summary = batch.summary(final, time.monotonic() - t_start)
    summary.calls, summary.failed_calls = _calls_since(engine, run_id, since)
    return summary


def _planned_call_cost(su: Setup, jobs: list[Job]) -> float:
    """The plan's mean cost of one call of these jobs (0 when unknown or nothing is left)."""
    totals, _models = _project(su, jobs)
    if totals["unknown"] or not totals["calls"]:
        return 0.0
    return totals["cost"] / totals["calls"]


def _mark_abandoned(conn: Any, conv_id: int, now) -> None:
    """Mark the LLMCall rows of the conversation's previous attempt(s) as abandoned (they stay linked
    to the conversation, for the record, but no longer count as its calls or cost)."""
    rows = conn.execute(select(_CALL.c.id, _CALL.c.params).where(_CALL.c.conversation_id == conv_id)).all()
    for call_id, params in rows:
        if (params or {}).get("attempt") != ABANDONED:
            conn.execute(
                update(_CALL)
                .where(_CALL.c.id == call_id)
                .values(params={**(params or {}), "attempt": ABANDONED, "abandoned_at": now.isoformat()})
            )


def run_costs(session: Session, run_ids: Sequence[int]) -> dict[int, dict]:
    """Per run: ``calls`` and ``cost_usd`` of the current attempts of its conversations, and
    ``abandoned_calls`` and ``abandoned_cost_usd`` of attempts a restart threw away."""
    out = {
        rid: {"calls": 0, "cost_usd": 0.0, "abandoned_calls": 0, "abandoned_cost_usd": 0.0} for rid in run_ids
    }
    if not out:
        return out
    q = select(LLMCall.run_id, LLMCall.cost_usd, LLMCall.params).where(LLMCall.run_id.in_(list(out)))
    for rid, cost, params in session.exec(q).all():
        pre = "abandoned_" if (params or {}).get("attempt") == ABANDONED else ""
        out[rid][pre + "calls"] += 1
        out[rid][pre + "cost_usd"] += cost or 0.0
    return out


def _calls_since(engine: Engine, run_id: int, since) -> tuple[int, int]:
    """(calls, failed calls) of the run recorded since ``since``: counted from the LLMCall rows, so
    calls that failed (never counted as progress) are in the summary too."""
    with Session(engine) as s:
        n, failed = s.exec(
            select(func.count(LLMCall.id), func.count(LLMCall.error)).where(
                LLMCall.run_id == run_id, LLMCall.created_at >= since
            )
        ).one()
    return int(n), int(failed)


def _build_models(su: Setup, opts: dict) -> tuple[Any, dict]:
    """The simulator model and the assistant models by name, built once: clients and connection
    pools are shared by all conversations."""
    sim_model = get_model(
        su.simulator_model, prices_file=su.spec.prices_file, **opts.get(su.simulator_model, {})
    )
    asst_models = {}
    for cfg in su.configs.values():
        if cfg.model not in asst_models:
            asst_models[cfg.model] = get_model(
                cfg.model, prices_file=su.spec.prices_file, **opts.get(cfg.model, {})
            )
    return sim_model, asst_models


def _check_prices(models: set[str], prices_file: str | None = None) -> None:
    """A budget is counted in USD, so every model needs a price."""
    for name in models:
        if price_of(name, prices_file) is None:
            raise UserInputError(
                f"the budget needs a price for {name}: add it to a price file named by "
                "WORKBENCH_PRICES (see `workbench models prices`)"
            )


def _finish_run(engine: Engine, run_id: int, me: str, status: str) -> None:
    """Record the run's final status and release it (if this process still owns it)."""
    with engine.begin() as conn:
        conn.execute(
            update(_RUN)
            .where(_RUN.c.id == run_id, _RUN.c.owner == me)
            .values(status=status, finished_at=utcnow(), owner=None)
        )


def _start_or_join(engine: Engine, su: Setup, me: str, params: dict) -> bool:
    """Start (or resume) the run as its owner; on PostgreSQL, join it when another live process
    works on it (True). On SQLite a second process is refused, as before."""
    try:
        _start_run(engine, su, me, params)
        return False
    except UserInputError as exc:
        if claims.shares_runs(engine):
            return True
        raise UserInputError(
            f"{exc}; on SQLite one process works on a run (on PostgreSQL several processes share it)"
        ) from None


def _seed_shared(engine: Engine, batch: _Batch, joined: bool) -> None:
    """The run's claim rows; the process that (re)started the run reopens the failed jobs it was
    asked to retry (a process joining a live run leaves the others' outcomes alone)."""
    reopen = set()
    if batch.spec.retry_failed and not joined:
        reopen = {k for k, (_id, st) in batch.existing.items() if st == "failed"}
    claims.seed_claims(engine, batch.run_id, [(j.condition_id, j.replicate) for j in batch.su.jobs], reopen)
    batch.since = _shared_since(engine, batch.run_id, joined)


def _shared_since(engine: Engine, run_id: int, joined: bool) -> Any:
    """Since when the spend of a shared run counts against ``--budget``: the start of the run by the
    first of the workers now on it (recorded in the run's params; a joining worker reads it)."""
    with engine.begin() as conn:
        params = conn.execute(select(_RUN.c.params).where(_RUN.c.id == run_id)).scalar() or {}
        if joined and params.get("shared_since"):
            return datetime.fromisoformat(params["shared_since"])
        now = utcnow()
        conn.execute(
            update(_RUN).where(_RUN.c.id == run_id).values(params={**params, "shared_since": now.isoformat()})
        )
        return now


def _finish_shared_run(engine: Engine, run_id: int, me: str, status: str) -> None:
    """Give back this process's claims; the last process of a shared run records its final status
    (counted from the database, over all processes' conversations)."""
    if claims.release_all(engine, run_id, me):
        with engine.begin() as conn:  # others still work: hand them the run, if it was ours
            conn.execute(
                update(_RUN)
                .where(_RUN.c.id == run_id, _RUN.c.owner == me)
                .values(owner=_any_worker(conn, run_id, me))
            )
        return
    with engine.begin() as conn:
        if status != "budget_stopped":
            open_jobs = conn.execute(
                select(func.count()).where(claims._CLAIM.c.run_id == run_id, claims._CLAIM.c.done.is_(False))
            ).scalar_one()
            failed = conn.execute(
                select(func.count()).where(_CONV.c.run_id == run_id, _CONV.c.status != "completed")
            ).scalar_one()
            status = "completed" if not open_jobs and not failed else "completed_with_failures"
        conn.execute(
            update(_RUN).where(_RUN.c.id == run_id).values(status=status, finished_at=utcnow(), owner=None)
        )


def _any_worker(conn: Any, run_id: int, me: str) -> str | None:
    return conn.execute(
        select(claims._CLAIM.c.worker)
        .where(claims._CLAIM.c.run_id == run_id, claims._CLAIM.c.worker.is_not(None))
        .limit(1)
    ).scalar()


def _recorders(engine: Engine, su: Setup, run_id: int, db: DatabaseWorker, sim_model: Any, asst_models: dict):
    """Recording wrappers of the simulator and of each assistant model. Writes are deferred: a
    call's LLMCall row, its turn and the next call's cache lookup are queued back to back and
    usually share one commit and one thread hand-off; the conversation waits for all its writes
    before it is closed (and fails if one failed)."""
    sim_rec = recorded(
        sim_model,
        engine,
        "simulator",
        study_id=su.study.id,
        run_id=run_id,
        prompt_version=su.template.label,
        cache=su.spec.cache,
        worker=db,
        defer_writes=True,
    )
    asst_rec = {
        m: recorded(
            model,
            engine,
            "assistant",
            study_id=su.study.id,
            run_id=run_id,
            cache=su.spec.cache,
            worker=db,
            defer_writes=True,
        )
        for m, model in asst_models.items()
    }
    return sim_rec, asst_rec


def _write_turn(conn: Any, conv_id: int, rec: TurnRecord) -> None:
    if rec.llm_call_id is None and rec.call is not None:
        rec.llm_call_id = rec.call.call_id  # its LLMCall row was queued (so written) before this turn
    rating = rec.rating
    if rating is not None:
        rec.meta = _rated(conn, rec.meta, rec.rating_call, rating.error)
    conn.execute(
        _INSERT_TURN,
        dict(
            conversation_id=conv_id,
            index=rec.index,
            role=rec.role,
            content=rec.content,
            created_at=rec.created_at,
            completed_at=rec.completed_at,
            latency_ms=rec.latency_ms,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
            llm_call_id=rec.llm_call_id,
            meta=rec.meta,
            intent=None,
            hallucination=rating.hallucination if rating else None,
            satisfaction=rating.satisfaction if rating else None,
            satisfaction_reason=rating.reason if rating else None,
        ),
    )


def _rated(conn: Any, meta: dict, call: Any, error: str | None) -> dict:
    """The meta of a turn or answer the simulated user rated: the rating call's id (its row was queued
    before this write); an answer that could not be used is recorded as the call's error."""
    if call is None:
        return meta
    if error and call.call_id is not None:
        conn.execute(update(_CALL).where(_CALL.c.id == call.call_id).values(error=f"rating: {error}"))
    return {**meta, "rating_call_id": call.call_id}


def _write_post_task(conn: Any, study_id: int, conv_id: int, res: ConversationResult, label: str) -> None:
    """The simulated user's post-task answers, stored where participants' are, marked as the
    simulator's (``raw_value`` names who answered, the prompt and the call)."""
    post, call = res.post_task, res.post_task_call
    if post is None:
        return
    _rated(conn, {}, call, post.error)
    call_id = call.call_id if call is not None else None
    rows = [
        dict(
            study_id=study_id,
            conversation_id=conv_id,
            participant_id=None,
            questionnaire=a.questionnaire,
            item=a.item,
            value=a.value,
            raw_value=simulator_raw_value(a, call_id, label),
            question=a.question,
            created_at=utcnow(),
        )
        for a in post.answers
    ]
    if rows:
        conn.execute(insert(_ANSWER), rows)


class _ConversationWrites:
    """One conversation's queued LLMCall and turn writes: ``flush`` waits for all of them and
    raises the first that failed."""

    def __init__(self, db: DatabaseWorker, conv_id: int, after_call: Callable[[Any], None]):
        self.db, self.conv_id, self.after_call = db, conv_id, after_call
        self.pending: list = []

    def on_turn(self, rec: TurnRecord) -> None:
        self.pending.append(self.db.submit(_write_turn, self.conv_id, rec))

    def after(self, c: Any) -> None:
        if c.record is not None:
            self.pending.append(c.record)
        self.after_call(c)

    async def flush(self) -> None:
        if self.pending:
            results = await asyncio.gather(*self.pending, return_exceptions=True)
            self.pending.clear()
            for r in results:
                if isinstance(r, BaseException):
                    raise r


class _Batch:
    """This invocation's share of a run: the conversations not yet done, ``concurrency`` at a time,
    each opened, played and closed in the database, with the rate limits and the budget applied
    around every model call."""

    def __init__(
        self,
        engine: Engine,
        su: Setup,
        contexts: dict,
        run_id: int,
        me: str,
        existing: dict,
        sim_model: Any,
        asst_models: dict,
        progress: Callable[[Progress], None] | None,
    ):
        self.su, self.spec, self.contexts = su, su.spec, contexts
        self.run_id, self.me, self.existing = run_id, me, existing
        skip_status = {"completed"} if self.spec.retry_failed else {"completed", "failed"}
        self.queue: deque = deque(
            j for j in su.jobs if existing.get((j.condition_id, j.replicate), (0, ""))[1] not in skip_status
        )
        self.prog = Progress(total=len(su.jobs), done=len(su.jobs) - len(self.queue))
        self.skipped = self.prog.done
        self.progress = progress
        self.limiter = RateLimiter(self.spec.rpm, self.spec.tpm)
        self.sim_params = self.spec.simulator_call_params()
        # One database thread for the whole run: cache lookups, LLMCall rows and turns of all in-flight
        # conversations are committed together in small batches, each written as it happens.
        self.db = DatabaseWorker(engine)
        self.sim_rec, self.asst_rec = _recorders(engine, su, run_id, self.db, sim_model, asst_models)
        self.budget_stopped = False
        self.calls_in_flight = 0
        self.planned_call_cost = _planned_call_cost(su, list(self.queue)) if self.spec.budget else 0.0

    # ---- dispatch ---------------------------------------------------------------------------------

    def report(self) -> None:
        if self.progress:
            self.progress(self.prog)

    async def run(self) -> None:
        workers = min(self.spec.concurrency, max(1, len(self.queue)))
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    async def _worker(self) -> None:
        while self.queue and not self.budget_stopped:
            job = self.queue.popleft()
            self.prog.in_flight += 1
            try:
                await self._one(job)
            finally:
                self.prog.in_flight -= 1
                self.report()

    # ---- budget and limits around every call ------------------------------------------------------

    def _before_call(self) -> Any:
        """Stop before a call whose projected cost, added to the spend and to the calls in flight,
        would pass the budget: checking the spend alone let the calls already running carry a run
        past its cap ($0.0004 spent on a $0.0002 budget)."""
        if self.spec.budget is not None:
            projected = self.prog.cost_usd + (self.calls_in_flight + 1) * self._call_estimate()
            if self.prog.cost_usd >= self.spec.budget or projected > self.spec.budget:
                self.budget_stopped = True
                raise BudgetExceeded()
        self.calls_in_flight += 1
        return self.limiter.acquire()

    def _call_estimate(self) -> float:
        """Projected cost of one call: the larger of the plan's mean and the mean so far."""
        seen = self.prog.cost_usd / self.prog.calls if self.prog.calls else 0.0
        return max(seen, self.planned_call_cost)

    def _after_call(self, c: Any) -> None:
        self.calls_in_flight -= 1
        self.prog.cost_usd += c.cost_usd or 0.0
        self.prog.calls += 1
        self.limiter.record(c.usage.prompt_tokens + c.usage.completion_tokens)

    def _call_failed(self) -> None:
        self.calls_in_flight -= 1

    # ---- one conversation -------------------------------------------------------------------------

    async def _one(self, job: Job) -> None:
        prior = self.existing.get((job.condition_id, job.replicate))
        conv_id = await self.db.run(self._open_conversation, job, prior)
        try:
            res = await self._converse(job, conv_id)
        except BudgetExceeded:
            # Marked as stopped (not left looking live); the next run starts it again.
            await self._close(conv_id, "stopped", end_reason="budget", ended_by="system")
            return
        except LLMError as exc:
            await self._fail(conv_id, str(exc))
            return
        except Exception as exc:  # a bug or an unexpected SDK error must not stop the batch
            await self._fail(conv_id, f"{exc.__class__.__name__}: {exc}")
            return
        await self._close(conv_id, "completed", end_reason=res.end_reason, ended_by=res.ended_by)
        self.prog.done += 1

    async def _converse(self, job: Job, conv_id: int) -> ConversationResult:
        su = self.su
        cond = su.conditions[job.condition_id]
        cfg = su.configs[su.assistant_override_id or cond.assistant_config_id]
        user = SimulatedUser(su.template, self.contexts[job.condition_id])
        # Each replicate samples with its own seed, so replicates differ and re-runs hit the cache.
        conv_seed = self.spec.seed * 1_000_003 + job.replicate
        sim = self.sim_rec.bind(conversation_id=conv_id)
        asst = self.asst_rec[cfg.model].bind(conversation_id=conv_id, prompt_version=cfg.version)
        writes = _ConversationWrites(self.db, conv_id, self._after_call)
        ratings = None
        if su.rating_template is not None:
            # The simulated user's answers: the simulator's model, recorded apart under their own prompt.
            rater = Rater(su.rating_template, user.ctx, su.post_task_items)
            model = self.sim_rec.bind(
                conversation_id=conv_id, purpose=RATING_PURPOSE, prompt_version=rater.label
            )
            ratings = Ratings(rater, model, {**self.sim_params, "seed": conv_seed})
        try:
            res = await run_conversation(
                user,
                sim,
                asst,
                cfg.system_prompt,
                {**self.sim_params, "seed": conv_seed},
                {**_params(cfg), "seed": conv_seed},
                writes.on_turn,
                self._before_call,
                writes.after,
                self._call_failed,
                ratings,
            )
        finally:
            await writes.flush()
        if ratings is not None:
            await self.db.run(_write_post_task, su.study.id, conv_id, res, ratings.rater.label)
        return res

    async def _fail(self, conv_id: int, error: str) -> None:
        await self._close(conv_id, "failed", error=error, end_reason="error", ended_by="system")
        self.prog.failed += 1

    async def _close(self, conv_id: int, status: str, **values: Any) -> None:
        await self.db.run(self._close_conversation, conv_id, status, dict(ended_at=utcnow(), **values))

    # ---- database writes (in the database thread) -------------------------------------------------

    def _open_conversation(self, conn: Any, job: Job, prior: tuple | None) -> int:
        now = utcnow()
        if prior:
            conv_id = prior[0]
            # A restart rewrites the transcript: labels of the old one (a labeller may have run on a
            # stopped or failed conversation before unfinished ones were skipped) go with its turns.
            conn.execute(delete(_LABEL).where(_LABEL.c.conversation_id == conv_id))
            # ... and so do the simulated user's post-task answers (a participant never answers for
            # a simulated conversation): a killed run does not answer twice.
            conn.execute(delete(_ANSWER).where(_ANSWER.c.conversation_id == conv_id))
            conn.execute(delete(_TURN).where(_TURN.c.conversation_id == conv_id))
            _mark_abandoned(conn, conv_id, now)
            conn.execute(
                update(_CONV)
                .where(_CONV.c.id == conv_id)
                .values(
                    status="in_progress",
                    error=None,
                    started_at=now,
                    ended_at=None,
                    end_reason=None,
                    ended_by=None,
                )
            )
            return conv_id
        cond = self.su.conditions[job.condition_id]
        return conn.execute(
            insert(_CONV).values(
                study_id=self.su.study.id,
                condition_id=cond.id,
                user_kind="agent",
                simulator_config_id=self.su.simulator_config_id,
                run_id=self.run_id,
                replicate=job.replicate,
                twin_of_id=job.twin_of_id,
                status="in_progress",
                language=cond.language,
                started_at=now,
                prompt_version=self.su.template.label,
                source="simulated",
                wave=None,
                meta={
                    "assistant_config_id": self.su.assistant_override_id or cond.assistant_config_id,
                    "seed": self.spec.seed,
                    "replicate": job.replicate,
                },
            )
        ).inserted_primary_key[0]

    def _close_conversation(self, conn: Any, conv_id: int, status: str, values: dict) -> None:
        conn.execute(update(_CONV).where(_CONV.c.id == conv_id).values(status=status, **values))
        conn.execute(
            update(_RUN)
            .where(_RUN.c.id == self.run_id, _RUN.c.owner == self.me)
            .values(heartbeat_at=utcnow())
        )

    # ---- summary ----------------------------------------------------------------------------------

    def final_status(self) -> str:
        if self.budget_stopped:
            return "budget_stopped"
        return "completed" if self.prog.done == self.prog.total else "completed_with_failures"

    def summary(self, status: str, seconds: float) -> RunSummary:
        p = self.prog
        return RunSummary(
            self.run_id,
            self.su.key,
            p.total,
            p.done,
            p.failed,
            self.skipped,
            p.total - p.done - p.failed,
            p.cost_usd,
            p.calls,
            self.budget_stopped,
            seconds,
            status,
            self.su.twins_skipped,
        )


class _SharedBatch(_Batch):
    """This process's share of a run that several processes work on together (PostgreSQL): each
    conversation is claimed in the database when a slot is free (``workbench.simulation.claims``)
    instead of taken from a list made at the start, its claim beats while it runs and is released
    in the transaction that closes it. Progress counts every process's completed conversations."""

    def __init__(self, engine: Engine, su: Setup, *args: Any):
        super().__init__(engine, su, *args)
        self.engine = engine
        self.jobs_by_key = {(j.condition_id, j.replicate): j for j in su.jobs}
        self.conditions = sorted({j.condition_id for j in su.jobs})
        self.max_replicate = max((j.replicate for j in su.jobs), default=-1)
        self.ran = 0  # conversations this process completed
        # The budget and the rpm/tpm limits are the run's, shared by all its workers: checked before
        # every call against the database (``_shared_before_call``), not by this process's limiter.
        self.limiter = RateLimiter()
        self.since = utcnow()  # replaced by _seed_shared
        self.pending = [0.0, 0, 0]  # cost, calls, tokens of this worker's calls not yet written

    async def run(self) -> None:
        beating = asyncio.create_task(self._beat())
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.spec.concurrency)))
        finally:
            beating.cancel()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(claims.CLAIM_BEAT_SECONDS)
            try:
                await asyncio.to_thread(claims.beat, self.engine, self.run_id, self.me)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the work goes on
                pass

    async def _worker(self) -> None:
        while not self.budget_stopped:
            job, done = await self.db.run(self._claim)
            self.prog.done = done
            if job is None:
                return
            self.prog.in_flight += 1
            try:
                await self._one(job)
            finally:
                self.prog.in_flight -= 1
                self.report()

    # ---- the run's budget and limits, shared by every worker ---------------------------------------

    def _before_call(self) -> Any:
        if self.spec.budget is None and not self.spec.rpm and not self.spec.tpm:
            return super()._before_call()
        return self._shared_before_call()

    async def _shared_before_call(self) -> None:
        """Every worker's spend counts: the run's LLMCall rows (since ``since``), this worker's calls
        not yet written and in flight, and two calls per conversation another worker holds (one in
        flight, one possibly not yet written: a conversation makes one call at a time). So workers
        checking at the same instant still cannot pass the budget together. rpm/tpm count the
        run's calls and tokens of the last 60 s the same way; over a limit, the call waits."""
        while True:
            cost, calls, tokens, others = await self.db.run(self._run_usage)
            p_cost, p_calls, p_tokens = self.pending
            if self.spec.budget is not None:
                spent = cost + p_cost
                ahead = self.calls_in_flight + 1 + 2 * others
                if spent >= self.spec.budget or spent + ahead * self._call_estimate() > self.spec.budget:
                    self.budget_stopped = True
                    raise BudgetExceeded()
            busy = calls + p_calls + self.calls_in_flight + others
            if (self.spec.rpm and busy >= self.spec.rpm) or (
                self.spec.tpm and tokens + p_tokens >= self.spec.tpm
            ):
                await asyncio.sleep(1.0)
                continue
            self.calls_in_flight += 1
            return

    def _run_usage(self, conn: Any) -> tuple[float, int, int, int]:
        """(the run's spend since ``since``, its calls and tokens of the last 60 s, conversations other
        workers hold), in one statement."""
        minute = utcnow() - timedelta(seconds=60)
        run_calls = _CALL.c.run_id == self.run_id
        recent = and_(run_calls, _CALL.c.created_at >= minute)
        row = conn.execute(
            select(
                select(func.coalesce(func.sum(_CALL.c.cost_usd), 0.0))
                .where(run_calls, _CALL.c.created_at >= self.since)
                .scalar_subquery(),
                select(func.count()).select_from(_CALL).where(recent).scalar_subquery(),
                select(func.coalesce(func.sum(_CALL.c.prompt_tokens + _CALL.c.completion_tokens), 0))
                .where(recent)
                .scalar_subquery(),
                select(func.count())
                .select_from(claims._CLAIM)
                .where(
                    claims._CLAIM.c.run_id == self.run_id,
                    claims._CLAIM.c.done.is_(False),
                    claims._CLAIM.c.worker.is_not(None),
                    claims._CLAIM.c.worker != self.me,
                )
                .scalar_subquery(),
            )
        ).one()
        return float(row[0] or 0.0), int(row[1]), int(row[2]), int(row[3])

    def _after_call(self, c: Any) -> None:
        super()._after_call(c)
        record = getattr(c, "record", None)
        if record is None:
            return
        item = (c.cost_usd or 0.0, 1, c.usage.prompt_tokens + c.usage.completion_tokens)
        self.pending = [a + b for a, b in zip(self.pending, item)]
        record.add_done_callback(
            lambda _f: setattr(self, "pending", [a - b for a, b in zip(self.pending, item)])
        )

    def _claim(self, conn: Any) -> tuple[Job | None, int]:
        """(the next job claimed for this process or None, conversations completed by all)."""
        key = claims.claim_next(conn, self.run_id, self.me, self.conditions, self.max_replicate)
        done = claims.completed_count(conn, self.run_id)
        if key is None:
            return None, done
        prior = claims.prior_conversation(conn, self.run_id, key)
        if prior:
            self.existing[key] = prior
        else:
            self.existing.pop(key, None)
        return self.jobs_by_key.get(key) or Job(*key), done

    def _close_conversation(self, conn: Any, conv_id: int, status: str, values: dict) -> None:
        super()._close_conversation(conn, conv_id, status, values)
        self.ran += status == "completed"
        key = conn.execute(select(_CONV.c.condition_id, _CONV.c.replicate).where(_CONV.c.id == conv_id)).one()
        claims.release_claim(conn, self.run_id, tuple(key), self.me, done=status in ("completed", "failed"))

    def summary(self, status: str, seconds: float) -> RunSummary:
        out = super().summary(status, seconds)
        out.skipped, out.shared = self.prog.done - self.ran, True
        return out
