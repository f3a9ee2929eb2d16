"""The batch runner: many simulated conversations, resumable, with limits, a budget and provenance.

A run is identified by ``SimulationRun.key``, a hash of what defines its results (study, simulator
config, assistant override, condition selection, twin mode); each conversation by (run, condition,
replicate). Running the same command again resumes: complete conversations are kept, the others are
started again from the beginning (the response cache makes the replayed calls free).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, update
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
    Profile,
    Scenario,
    SimulationRun,
    Study,
    TaskContext,
    Turn,
)
from db.types import utcnow
from db.worker import DatabaseWorker
from workbench.llm import LLMError, get_model, recorded
from workbench.llm.prices import price_of
from workbench.simulation.conversation import TurnRecord, run_conversation
from workbench.simulation.templates import PromptTemplate, load_template
from workbench.simulation.user import SimulatedUser, UserContext
from workbench.studies import study_settings

_CONV = Conversation.__table__
_TURN = Turn.__table__
_LABEL = Label.__table__
_INSERT_TURN = insert(_TURN)
# Typical message sizes (tokens) for dry-run projections.
EST_USER_TOKENS = 40
EST_ASSISTANT_TOKENS = 400


@dataclass
class Job:
    condition_id: int
    replicate: int
    twin_of_id: int | None = None


@dataclass
class Setup:
    study: Study
    template: PromptTemplate
    simulator_config_id: int
    simulator_model: str
    assistant_override_id: int | None
    jobs: list[Job]
    key: str
    min_turns: int
    max_turns: int
    sim_params: dict
    configs: dict  # assistant_config_id -> AssistantConfig
    conditions: dict  # condition_id -> Condition


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

    def lines(self) -> list[str]:
        cost = (
            "unknown (no price for a model; see WORKBENCH_PRICES)"
            if self.cost_usd is None
            else f"${self.cost_usd:,.2f} (up to ${self.cost_usd_max:,.2f} if every conversation runs to max turns)"
        )
        return [
            f"run {self.run_key[:12]}: {self.n_conversations} conversations, {self.n_done} already complete, "
            f"{self.n_remaining} to run",
            f"projected calls: {self.calls:,} (at most {self.calls_max:,})",
            f"projected tokens: {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion",
            f"projected cost: {cost}",
            f"models: {', '.join(self.models)}",
        ]


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

    def lines(self) -> list[str]:
        return [
            f"run {self.run_key[:12]} (id {self.run_id}): {self.status}",
            f"{self.completed}/{self.total} complete ({self.skipped} before this run), {self.failed} failed, "
            f"{self.not_started} not run",
            f"{self.calls} calls, ${self.cost_usd:.4f}, {self.seconds:.1f}s",
        ]


# --------------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------------


def _study(session: Session, study: str | int | Study) -> Study:
    if isinstance(study, Study):
        return session.get(Study, study.id)
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


def _twin_jobs(session: Session, study: Study, twin_of: Sequence[int | str], n: int) -> list[Job]:
    if list(twin_of) == ["all"]:
        ids = session.exec(
            select(Conversation.id)
            .where(Conversation.study_id == study.id, Conversation.user_kind == "human")
            .order_by(Conversation.id)
        ).all()
        if not ids:
            raise UserInputError(
                f"study {study.name!r} has no human conversations yet, so there is nothing to "
                "twin: collect human sessions (or import them) first"
            )
    else:
        ids = sorted(int(i) for i in twin_of)
    jobs, per_condition = [], {}
    for cid in ids:
        conv = session.get(Conversation, cid)
        if conv is None or conv.study_id != study.id or conv.user_kind != "human":
            raise UserInputError(f"conversation {cid} is not a human conversation of study {study.name!r}")
        k = per_condition.get(conv.condition_id, 0)
        per_condition[conv.condition_id] = k + 1
        jobs += [Job(conv.condition_id, k * n + r, twin_of_id=cid) for r in range(n)]
    return jobs


def _setup(
    session: Session,
    study: Any,
    simulator_model: str,
    assistant_model: str | None,
    conditions: Sequence[str] | None,
    n_per_condition: int,
    max_turns: int | None,
    min_turns: int | None,
    temperature: float | None,
    seed: int,
    prompt: str | None,
    goal_reminder_every: int | None,
    twin_of: Sequence[Any] | None,
    simulator_max_tokens: int | None = None,
) -> Setup:
    if n_per_condition < 1:
        raise UserInputError("--n-per-condition must be at least 1")
    if temperature is not None and not 0 <= temperature <= 2:
        raise UserInputError(f"--temperature {temperature} is outside 0..2")
    if max_turns is not None and max_turns < 1:
        raise UserInputError("--max-turns must be at least 1")
    if min_turns is not None and min_turns < 1:
        raise UserInputError("--min-turns must be at least 1")
    if min_turns is not None and max_turns is not None and min_turns > max_turns:
        raise UserInputError(f"min turns ({min_turns}) is greater than max turns ({max_turns})")
    template = load_template(prompt)
    st = _study(session, study)
    settings = study_settings(st)
    max_t = settings.max_turns if max_turns is None else max_turns
    if min_turns is not None and max_turns is None and min_turns > max_t:  # both given: checked above
        raise UserInputError(
            f"min turns ({min_turns}) is greater than max turns ({max_t}, the study's setting)"
        )
    # The study's own minimum gives way to a lower --max-turns.
    min_t = min(settings.min_turns if min_turns is None else min_turns, max_t)
    if "/" not in (simulator_model or ""):
        raise UserInputError(f"the simulator model is a provider/model name, got {simulator_model!r}")
    sim_cfg = repo.get_or_create_simulator_config(
        session,
        simulator_model,
        prompt_template=template.name,
        prompt_version=template.version,
        temperature=temperature,
        seed=seed,
        params={
            "min_turns": min_t,
            "max_turns": max_t,
            "goal_reminder_every": goal_reminder_every,
            **({"max_tokens": simulator_max_tokens} if simulator_max_tokens else {}),
        },
    )
    if twin_of:
        jobs = _twin_jobs(session, st, twin_of, n_per_condition)
        cond_ids = sorted({j.condition_id for j in jobs})
    else:
        chosen = _select_conditions(session, st, conditions)
        if not chosen:
            raise UserInputError(f"study {st.name!r} has no conditions to simulate")
        jobs = [Job(c.id, r) for c in chosen for r in range(n_per_condition)]
        cond_ids = [c.id for c in chosen]
    conds = {c.id: c for c in session.exec(select(Condition).where(Condition.id.in_(cond_ids))).all()}
    configs = {
        a.id: a
        for a in session.exec(
            select(AssistantConfig).where(
                AssistantConfig.id.in_({c.assistant_config_id for c in conds.values()})
            )
        ).all()
    }
    override_id = None
    if assistant_model:
        # Same system prompt and sampling as the study's assistant, another model.
        base = configs[next(iter(conds.values())).assistant_config_id]
        o = repo.get_or_create_assistant_config(
            session,
            assistant_model,
            system_prompt=base.system_prompt,
            temperature=base.temperature,
            max_tokens=base.max_tokens,
            version=base.version,
            params=base.params,
        )
        configs[o.id] = o
        override_id = o.id
    key = hashlib.sha256(
        json.dumps(
            {
                "study": st.id,
                "simulator_config": sim_cfg.fingerprint,
                "assistant_override": override_id,
                "conditions": sorted(str(c) for c in conditions) if conditions else None,
                "twin_of": [str(t) for t in twin_of] if twin_of else None,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    sim_params = {"seed": seed}
    if temperature is not None:
        sim_params["temperature"] = temperature
    if simulator_max_tokens:
        sim_params["max_tokens"] = simulator_max_tokens
    session.commit()
    return Setup(
        st,
        template,
        sim_cfg.id,
        simulator_model,
        override_id,
        jobs,
        key,
        min_t,
        max_t,
        sim_params,
        configs,
        conds,
    )


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


def _cost(model: str, prompt: int, completion: int, prices_file: str | Path | None = None) -> float | None:
    p = price_of(model, prices_file)
    return None if p is None else (prompt * p["input"] + completion * p["output"]) / 1e6


def plan_simulation(
    engine: Engine,
    study: Any,
    simulator_model: str,
    assistant_model: str | None = None,
    conditions: Sequence[str] | None = None,
    n_per_condition: int = 1,
    max_turns: int | None = None,
    min_turns: int | None = None,
    temperature: float | None = None,
    seed: int = 0,
    prompt: str | None = None,
    goal_reminder_every: int | None = None,
    twin_of: Sequence[Any] | None = None,
    simulator_max_tokens: int | None = None,
    prices_file: str | Path | None = None,
    **_: Any,
) -> Plan:
    """Projected calls, tokens and cost of a run (nothing is called; nothing but configs is written)."""
    with Session(engine, expire_on_commit=False) as s:
        su = _setup(
            s,
            study,
            simulator_model,
            assistant_model,
            conditions,
            n_per_condition,
            max_turns,
            min_turns,
            temperature,
            seed,
            prompt,
            goal_reminder_every,
            twin_of,
            simulator_max_tokens,
        )
    _, existing = _existing(engine, su.key)
    remaining = [j for j in su.jobs if existing.get((j.condition_id, j.replicate), (0, ""))[1] != "completed"]
    sim_sys = len(su.template.part("en", "system", profile="x" * 400, task="x" * 400)) // 4
    expected = max(su.min_turns, round((su.min_turns + su.max_turns) / 2))
    totals = {"calls": 0, "calls_max": 0, "p": 0, "c": 0, "cost": 0.0, "cost_max": 0.0}
    unknown = False
    models = {su.simulator_model}
    for j in remaining:
        cfg = su.configs[su.assistant_override_id or su.conditions[j.condition_id].assistant_config_id]
        models.add(cfg.model)
        asys = len(cfg.system_prompt or "") // 4
        aout = min(cfg.max_tokens or EST_ASSISTANT_TOKENS, EST_ASSISTANT_TOKENS)
        for turns, suffix in ((expected, ""), (su.max_turns, "_max")):
            calls, p, c = _projection(1, turns, sim_sys, asys, aout)
            sim_p = p // 2
            cost_s = _cost(su.simulator_model, sim_p, (EST_USER_TOKENS + 10) * turns, prices_file)
            cost_a = _cost(cfg.model, p - sim_p, aout * turns, prices_file)
            if cost_s is None or cost_a is None:
                unknown = True
            else:
                totals["cost" + suffix] += cost_s + cost_a
            totals["calls" + suffix] += calls
            if not suffix:
                totals["p"] += p
                totals["c"] += c
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
    )


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
    study: Any,
    simulator_model: str,
    assistant_model: str | None = None,
    conditions: Sequence[str] | None = None,
    n_per_condition: int = 1,
    concurrency: int = 4,
    max_turns: int | None = None,
    budget: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    min_turns: int | None = None,
    temperature: float | None = None,
    seed: int = 0,
    prompt: str | None = None,
    goal_reminder_every: int | None = None,
    twin_of: Sequence[Any] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    cache: bool = True,
    model_options: dict | None = None,
    retry_failed: bool = True,
    simulator_max_tokens: int | None = None,
    prices_file: str | Path | None = None,
) -> RunSummary:
    """Run (or resume) a batch of simulated conversations; every turn is written as it happens."""
    return asyncio.run(arun_simulation(**{k: v for k, v in locals().items()}))


async def arun_simulation(
    engine: Engine,
    study: Any,
    simulator_model: str,
    assistant_model: str | None = None,
    conditions: Sequence[str] | None = None,
    n_per_condition: int = 1,
    concurrency: int = 4,
    max_turns: int | None = None,
    budget: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    min_turns: int | None = None,
    temperature: float | None = None,
    seed: int = 0,
    prompt: str | None = None,
    goal_reminder_every: int | None = None,
    twin_of: Sequence[Any] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    cache: bool = True,
    model_options: dict | None = None,
    retry_failed: bool = True,
    simulator_max_tokens: int | None = None,
    prices_file: str | Path | None = None,
) -> RunSummary:
    if concurrency < 1:
        raise UserInputError("--concurrency must be at least 1")
    t_start = time.monotonic()
    with Session(engine, expire_on_commit=False) as s:
        su = _setup(
            s,
            study,
            simulator_model,
            assistant_model,
            conditions,
            n_per_condition,
            max_turns,
            min_turns,
            temperature,
            seed,
            prompt,
            goal_reminder_every,
            twin_of,
            simulator_max_tokens,
        )
        contexts = {
            cid: _user_context(s, c, su.min_turns, su.max_turns, goal_reminder_every)
            for cid, c in su.conditions.items()
        }
    opts = model_options or {}
    # Models are built once (clients and connection pools are shared by all conversations).
    sim_model = get_model(su.simulator_model, prices_file=prices_file, **opts.get(su.simulator_model, {}))
    asst_models = {}
    for cfg in su.configs.values():
        if cfg.model not in asst_models:
            asst_models[cfg.model] = get_model(cfg.model, prices_file=prices_file, **opts.get(cfg.model, {}))
    if budget is not None:
        for name in {su.simulator_model, *asst_models}:
            if price_of(name, prices_file) is None:
                raise UserInputError(
                    f"--budget needs a price for {name}: add it to a price file named by "
                    "WORKBENCH_PRICES (see `workbench models prices`)"
                )

    me = process_owner()
    _start_run(
        engine,
        su,
        me,
        {
            "simulator_model": su.simulator_model,
            "assistant_model": assistant_model,
            "conditions": list(conditions) if conditions else None,
            "twin_of": [str(t) for t in twin_of] if twin_of else None,
            "min_turns": su.min_turns,
            "max_turns": su.max_turns,
            "prompt": su.template.label,
            "seed": seed,
            "temperature": temperature,
            "goal_reminder_every": goal_reminder_every,
        },
    )
    # Read after the claim: what is done is what no other process can still be changing.
    run_id, existing = _existing(engine, su.key)

    skip_status = {"completed"} if retry_failed else {"completed", "failed"}
    todo = [j for j in su.jobs if existing.get((j.condition_id, j.replicate), (0, ""))[1] not in skip_status]
    prog = Progress(total=len(su.jobs), done=len(su.jobs) - len(todo))
    skipped = prog.done
    limiter = RateLimiter(rpm, tpm)
    # One database thread for the whole run: cache lookups, LLMCall rows and turns of all in-flight
    # conversations are committed together in small batches, each written as it happens.
    db = DatabaseWorker(engine)
    # Deferred writes: a call's LLMCall row, its turn and the next call's cache lookup are queued
    # back to back and usually share one commit and one thread hand-off; the conversation waits for
    # all its writes before it is closed (and fails if one failed).
    sim_rec = recorded(
        sim_model,
        engine,
        "simulator",
        study_id=su.study.id,
        run_id=run_id,
        prompt_version=su.template.label,
        cache=cache,
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
            cache=cache,
            worker=db,
            defer_writes=True,
        )
        for m, model in asst_models.items()
    }
    state = {"budget_stopped": False, "completed": 0, "failed": 0}
    queue: deque = deque(todo)

    def report() -> None:
        if progress:
            progress(prog)

    def before_call() -> Any:
        if budget is not None and prog.cost_usd >= budget:
            state["budget_stopped"] = True
            raise BudgetExceeded()
        return limiter.acquire()

    def after_call(c: Any) -> None:
        prog.cost_usd += c.cost_usd or 0.0
        prog.calls += 1
        limiter.record(c.usage.prompt_tokens + c.usage.completion_tokens)

    def open_conversation(conn: Any, job: Job, prior: tuple | None) -> int:
        cond = su.conditions[job.condition_id]
        now = utcnow()
        if prior:
            conv_id = prior[0]
            # A restart rewrites the transcript: labels of the old one (a labeller may have run on a
            # stopped or failed conversation before unfinished ones were skipped) go with its turns.
            conn.execute(delete(_LABEL).where(_LABEL.c.conversation_id == conv_id))
            conn.execute(delete(_TURN).where(_TURN.c.conversation_id == conv_id))
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
        return conn.execute(
            insert(_CONV).values(
                study_id=su.study.id,
                condition_id=cond.id,
                user_kind="agent",
                simulator_config_id=su.simulator_config_id,
                run_id=run_id,
                replicate=job.replicate,
                twin_of_id=job.twin_of_id,
                status="in_progress",
                language=cond.language,
                started_at=now,
                prompt_version=su.template.label,
                source="simulated",
                wave=None,
                meta={
                    "assistant_config_id": su.assistant_override_id or cond.assistant_config_id,
                    "seed": seed,
                    "replicate": job.replicate,
                },
            )
        ).inserted_primary_key[0]

    def write_turn(conn: Any, conv_id: int, rec: TurnRecord) -> None:
        if rec.llm_call_id is None and rec.call is not None:
            rec.llm_call_id = rec.call.call_id  # its LLMCall row was queued (so written) before this turn
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
            ),
        )

    def close_conversation(conn: Any, conv_id: int, status: str, values: dict) -> None:
        conn.execute(update(_CONV).where(_CONV.c.id == conv_id).values(status=status, **values))
        conn.execute(
            update(_RUN).where(_RUN.c.id == run_id, _RUN.c.owner == me).values(heartbeat_at=utcnow())
        )

    async def one(job: Job) -> None:
        prior = existing.get((job.condition_id, job.replicate))
        conv_id = await db.run(open_conversation, job, prior)
        cond = su.conditions[job.condition_id]
        cfg = su.configs[su.assistant_override_id or cond.assistant_config_id]
        user = SimulatedUser(su.template, contexts[job.condition_id])
        # Each replicate samples with its own seed, so replicates differ and re-runs hit the cache.
        conv_seed = seed * 1_000_003 + job.replicate
        sim = sim_rec.bind(conversation_id=conv_id)
        asst = asst_rec[cfg.model].bind(conversation_id=conv_id, prompt_version=cfg.version)

        writes: list = []  # this conversation's queued LLMCall and turn writes

        def on_turn(rec: TurnRecord) -> None:
            writes.append(db.submit(write_turn, conv_id, rec))

        def after(c: Any) -> None:
            if c.record is not None:
                writes.append(c.record)
            after_call(c)

        async def written() -> None:
            if writes:
                results = await asyncio.gather(*writes, return_exceptions=True)
                writes.clear()
                for r in results:
                    if isinstance(r, BaseException):
                        raise r

        try:
            try:
                res = await run_conversation(
                    user,
                    sim,
                    asst,
                    cfg.system_prompt,
                    {**su.sim_params, "seed": conv_seed},
                    {**_params(cfg), "seed": conv_seed},
                    on_turn,
                    before_call,
                    after,
                )
            finally:
                await written()
        except BudgetExceeded:
            # Marked as stopped (not left looking live); the next run starts it again.
            await db.run(
                close_conversation,
                conv_id,
                "stopped",
                dict(ended_at=utcnow(), end_reason="budget", ended_by="system"),
            )
            return
        except LLMError as exc:
            await db.run(
                close_conversation,
                conv_id,
                "failed",
                dict(error=str(exc), ended_at=utcnow(), end_reason="error", ended_by="system"),
            )
            prog.failed += 1
            state["failed"] += 1
            return
        except Exception as exc:  # a bug or an unexpected SDK error must not stop the batch
            await db.run(
                close_conversation,
                conv_id,
                "failed",
                dict(
                    error=f"{exc.__class__.__name__}: {exc}",
                    ended_at=utcnow(),
                    end_reason="error",
                    ended_by="system",
                ),
            )
            prog.failed += 1
            state["failed"] += 1
            return
        await db.run(
            close_conversation,
            conv_id,
            "completed",
            dict(ended_at=utcnow(), end_reason=res.end_reason, ended_by=res.ended_by),
        )
        prog.done += 1
        state["completed"] += 1

    async def worker() -> None:
        while queue and not state["budget_stopped"]:
            job = queue.popleft()
            prog.in_flight += 1
            try:
                await one(job)
            finally:
                prog.in_flight -= 1
                report()

    report()
    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(todo))))))
    finally:
        for model in (sim_model, *asst_models.values()):
            await model.aclose()
        final = (
            "budget_stopped"
            if state["budget_stopped"]
            else "completed"
            if prog.done == prog.total
            else "completed_with_failures"
        )
        with engine.begin() as conn:
            conn.execute(
                update(_RUN)
                .where(_RUN.c.id == run_id, _RUN.c.owner == me)
                .values(status=final, finished_at=utcnow(), owner=None)
            )
    not_run = prog.total - prog.done - prog.failed
    return RunSummary(
        run_id,
        su.key,
        prog.total,
        prog.done,
        prog.failed,
        skipped,
        not_run,
        prog.cost_usd,
        prog.calls,
        state["budget_stopped"],
        time.monotonic() - t_start,
        final,
    )
