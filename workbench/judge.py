"""The LLM judge of pairwise indistinguishability: pairs, the versioned prompt, the calls, parsing.

A pair is a human and a simulated conversation of the same condition: the simulated conversation's
digital twin first, else a human of the same condition, else of the same scenario and task context
(the human least used so far, so pairs spread over people). Anchors: human-vs-human (HH) and
simulator-vs-simulator (PP) pairs matched the same way. Each pair is judged ``samples`` times with
prompt ``judge-pairwise@1`` (``workbench/prompts/judge-pairwise.v1.yaml``); a deterministic coin per
(pair, sample) puts the candidate in slot A or B. The counting is ``analysis.indistinguishability``.

Every call goes through ``workbench.llm.recorded(..., purpose="judge")`` with the study, the prompt
version and the candidate conversation; the response cache is the judge's store: a rerun (or the
report) finds every judgement already made by its cache key (model, messages = prompt version +
pair + slot, parameters = sample seed), so nothing is asked twice. A reply without a verdict (a
refusal, malformed JSON) gets its parse error written on its LLMCall row: it is excluded, counted,
and asked again on the next run (a call that failed is asked again too).

Transcripts are in the analysis language (``StudyData.language``): a turn in another language is
replaced by its stored translation, as the features do, so the judge cannot tell people from
simulators by the language; each transcript is cut at ``MAX_TRANSCRIPT_CHARS`` characters.

Example::

    plan = plan_judge(engine, data, "openai/gpt-4o-mini", samples=3, n_pairs=100)
    result = run_judge_sync(engine, plan, recorded(get_model(...), engine, purpose="judge"))
    summary, records = judge_tables(result.judgements, plan)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sqlalchemy import select, update

from analysis.indistinguishability import JUDGEMENT_COLUMNS, judge_records, judge_summary, pair_scores
from db.errors import UserInputError, WorkbenchError
from db.models import LLMCall
from workbench.llm.base import CallParams, validate_messages
from workbench.llm.recording import cache_key

PROMPT_DIR = Path(__file__).with_name("prompts")
PROMPT_NAME = "judge-pairwise"
DEFAULT_PROMPT = "1"
PURPOSE = "judge"
DEFAULT_SAMPLES = 3
DEFAULT_PAIRS = 100  # per simulator, and as many HH pairs
SEED = 0  # fixed: pairs and slots must be found again by the rerun and the report
TEMPERATURE = 0.7
MAX_TOKENS = 400
EST_COMPLETION_TOKENS = 150  # a short reasoning and the verdict, for the projection
MAX_TRANSCRIPT_CHARS = 8000
MAX_STORED_SAMPLES = 20  # the report looks for at most this many samples per pair
UNRECORDED = "(unrecorded simulator)"


# --------------------------------------------------------------------------------------------------
# The prompt
# --------------------------------------------------------------------------------------------------


def load_prompt(version: str = DEFAULT_PROMPT) -> dict:
    """The judge prompt of ``version``, with ``label`` = ``judge-pairwise@<version>``."""
    path = PROMPT_DIR / f"{PROMPT_NAME}.v{version}.yaml"
    if not path.exists():
        known = sorted(p.stem.rsplit(".v", 1)[1] for p in PROMPT_DIR.glob(f"{PROMPT_NAME}.v*.yaml"))
        raise UserInputError(f"no judge prompt version {version!r} (known: {', '.join(known)})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = {"version", "system", "user", "turn"} - set(data)
    if missing:
        raise UserInputError(f"{path.name}: missing keys {sorted(missing)}")
    data["label"] = f"{PROMPT_NAME}@{data['version']}"
    return data


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_VERDICT_FIELD = re.compile(r'"?verdict"?\s*[:=]\s*"?\s*(?:conversation\s+)?(a|b|tie)\b', re.IGNORECASE)


def _normalise(value) -> str | None:
    v = str(value).strip().strip("\"'*. ").upper()
    v = v.removeprefix("CONVERSATION ").strip()
    if v in ("A", "B"):
        return v
    if v in ("TIE", "EQUAL", "BOTH", "NEITHER", "CANNOT TELL"):
        return "TIE"
    return None


def parse_verdict(text: str | None) -> tuple[str | None, str | None]:
    """(verdict A | B | TIE, None) or (None, why): the JSON object in the reply (code fences and text
    around it allowed; the key in any case), else a ``verdict: X`` line; anything else is a refusal
    or a malformed reply."""
    raw = (text or "").strip()
    if not raw:
        return None, "empty reply"
    m = _JSON_OBJECT.search(raw)
    if m:
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            for k, v in obj.items():
                if str(k).strip().lower() == "verdict":
                    verdict = _normalise(v)
                    if verdict:
                        return verdict, None
                    return None, f"verdict {str(v)[:40]!r} is not A, B or Tie"
    found = _VERDICT_FIELD.findall(raw)
    if found:
        return _normalise(found[-1]), None
    return None, f"no verdict in the reply (refusal or malformed): {raw[:80]!r}"


# --------------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    kind: str  # sp | hh | pp
    simulator: str | None
    candidate_id: int  # whose win counts: the simulated conversation of an sp pair
    other_id: int
    cluster: str  # bootstrap unit: the human's participant (sp, hh), else the conversation
    match: str  # twin | condition | scenario_task

    @property
    def pair_id(self) -> str:
        return f"{self.kind}:{self.candidate_id}:{self.other_id}"


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _population(convs: pd.DataFrame) -> pd.Series:
    sim = convs["simulator"].astype(object).where(convs["simulator"].notna(), UNRECORDED).astype(str)
    return sim.where(convs["user_kind"] == "agent", "human")


def _cluster(row) -> str:
    p = row.get("participant")
    return f"p:{p}" if isinstance(p, str) and p else f"c:{int(row['conversation_id'])}"


class _Matcher:
    """Finds a partner of a conversation among ``pool``: same condition first, else same scenario
    and task context; the partner used least so far, ties in the seeded order of the pool."""

    def __init__(self, pool: pd.DataFrame):
        self.rows = {int(r["conversation_id"]): r for r in pool.to_dict("records")}
        self.order = list(self.rows)
        self.used = dict.fromkeys(self.order, 0)
        self.by_cond: dict = {}
        self.by_task: dict = {}
        for cid, r in self.rows.items():
            self.by_cond.setdefault(r["condition_id"], []).append(cid)
            self.by_task.setdefault((r["scenario"], r["task_context_id"]), []).append(cid)

    def find(self, row: dict, exclude: set) -> tuple[int | None, str]:
        for where, cands in (
            ("condition", self.by_cond.get(row["condition_id"], [])),
            ("scenario_task", self.by_task.get((row["scenario"], row["task_context_id"]), [])),
        ):
            ok = [c for c in cands if c not in exclude]
            if ok:
                best = min(ok, key=lambda c: self.used[c])
                self.used[best] += 1
                return best, where
        return None, ""


def _shuffled(frame: pd.DataFrame, seed: int, name: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.iloc[_rng(seed, name).permutation(len(frame))]


def _sp_pairs(sim: str, agents: pd.DataFrame, humans: pd.DataFrame, seed: int) -> list[Pair]:
    human_rows = {int(r["conversation_id"]): r for r in humans.to_dict("records")}
    matcher = _Matcher(_shuffled(humans, seed, f"humans:{sim}"))
    twins, others = [], []
    for a in _shuffled(agents, seed, f"sp:{sim}").to_dict("records"):
        twin = a.get("twin_of_id")
        if twin is not None and not pd.isna(twin) and int(twin) in human_rows:
            h, how = int(twin), "twin"
            matcher.used[h] += 1
        else:
            h, how = matcher.find(a, set())
        if h is None:
            continue
        p = Pair("sp", sim, int(a["conversation_id"]), h, _cluster(human_rows[h]), how)
        (twins if how == "twin" else others).append(p)
    return twins + others


def _same_kind_pairs(kind: str, sim: str | None, pool: pd.DataFrame, seed: int) -> list[Pair]:
    """HH or PP pairs: each conversation with another of the same condition (a different
    participant preferred for HH), every unordered pair at most once."""
    pool = _shuffled(pool, seed, f"{kind}:{sim}")
    matcher = _Matcher(pool)
    cluster = {cid: _cluster(r) for cid, r in matcher.rows.items()}
    people: dict[str, set] = {}
    for cid, cl in cluster.items():
        people.setdefault(cl, set()).add(cid)
    partners: dict[int, set] = {}
    out = []
    for cid in matcher.order:
        r = matcher.rows[cid]
        exclude = {cid} | partners.get(cid, set())
        same_person = people[cluster[cid]] if kind == "hh" else set()
        other, how = matcher.find(r, exclude | same_person)
        if other is None and kind == "hh":
            other, how = matcher.find(r, exclude)
        if other is None:
            continue
        partners.setdefault(cid, set()).add(other)
        partners.setdefault(other, set()).add(cid)
        out.append(Pair(kind, sim, cid, other, cluster[cid] if kind == "hh" else f"c:{cid}", how))
    return out


def build_pairs(convs: pd.DataFrame, n_pairs: int | None = DEFAULT_PAIRS, seed: int = SEED) -> list[Pair]:
    """SP pairs per simulator (twins first), PP pairs per simulator and HH pairs, each list cut at
    ``n_pairs`` (None: all); no anchors without a simulator-human pair (nothing to calibrate). The order is seeded and a shorter list is the start of a longer one, so
    a rerun with more pairs reuses the judgements of the first ones. ``convs``: conversation_id,
    user_kind, simulator, condition_id, scenario, task_context_id, twin_of_id, participant."""
    convs = convs[convs["user_kind"].isin(["human", "agent"])].copy()
    convs["population"] = _population(convs)
    humans = convs[convs["population"] == "human"]
    cut = (lambda xs: xs) if n_pairs is None else (lambda xs: xs[:n_pairs])
    out: list[Pair] = []
    for sim in sorted(set(convs["population"]) - {"human"}):
        agents = convs[convs["population"] == sim]
        sp = cut(_sp_pairs(sim, agents, humans, seed))
        if sp:  # anchors only for a simulator that has pairs with people
            out += sp + cut(_same_kind_pairs("pp", sim, agents, seed))
    if out:
        out += cut(_same_kind_pairs("hh", None, humans, seed))
    return out


# --------------------------------------------------------------------------------------------------
# Jobs: one call per (pair, sample)
# --------------------------------------------------------------------------------------------------


def transcripts(engine, convs: pd.DataFrame, language: str | None, max_chars: int = MAX_TRANSCRIPT_CHARS):
    """conversation id -> its transcript in the analysis language (``ROLE: text`` lines), cut at
    ``max_chars`` characters."""
    from analysis.features import _texts, _turns_frame

    ids = [int(c) for c in convs["conversation_id"]]
    lines: dict[int, list[str]] = {}
    for i in range(0, len(ids), 5000):
        part = ids[i : i + 5000]
        sub = convs[convs["conversation_id"].isin(part)]
        for t in _texts(_turns_frame(engine, part), sub, language):
            if t.text:
                lines.setdefault(t.conversation_id, []).append(f"{t.role.upper()}: {t.text}")
    out = {}
    for cid, ls in lines.items():
        text = "\n".join(ls)
        out[cid] = text if len(text) <= max_chars else text[:max_chars] + "\n[... cut]"
    return out


def candidate_slot(pair_id: str, sample: int, label: str, seed: int = SEED) -> str:
    """A or B: where the candidate is shown in this sample (a seeded coin per pair and sample)."""
    digest = hashlib.sha256(f"{seed}:{label}:{pair_id}:{sample}".encode()).digest()
    return "A" if digest[0] % 2 == 0 else "B"


def call_params(sample: int, seed: int = SEED) -> dict:
    return {"temperature": TEMPERATURE, "max_tokens": MAX_TOKENS, "seed": seed + sample}


@dataclass
class Job:
    pair: Pair
    sample: int
    slot: str
    messages: list[dict]
    params: dict
    key: str
    cached: bool = False


def make_job(prompt: dict, model_name: str, pair: Pair, sample: int, texts: dict, seed: int = SEED) -> Job:
    slot = candidate_slot(pair.pair_id, sample, prompt["label"], seed)
    cand, other = texts[pair.candidate_id], texts[pair.other_id]
    a, b = (cand, other) if slot == "A" else (other, cand)
    msgs = [
        {"role": "system", "content": prompt["system"].strip()},
        {"role": "user", "content": prompt["user"].format(conversation_a=a, conversation_b=b).strip()},
    ]
    params = call_params(sample, seed)
    # The key the recording layer gives this call (provider parameters beyond CallParams are unset).
    key = cache_key(model_name, validate_messages(msgs), CallParams(**params).model_dump(exclude_none=True))
    return Job(pair, sample, slot, msgs, params, key)


def _cached_keys(engine, study_id: int) -> set[str]:
    t = LLMCall.__table__
    q = select(t.c.cache_key).where(
        t.c.purpose == PURPOSE, t.c.study_id == study_id, t.c.error.is_(None), t.c.cache_hit.is_(False)
    )
    with engine.connect() as conn:
        return {k for (k,) in conn.execute(q) if k}


@dataclass
class JudgePlan:
    model_name: str
    prompt: dict
    study_id: int
    samples: int
    pairs: list[Pair]
    jobs: list[Job]
    unmatched: dict  # simulator -> simulated conversations without a human of their condition
    prompt_tokens: int = 0  # of the calls still to make
    completion_tokens: int = 0
    cost_usd: float | None = None
    per_call_usd: float | None = None

    @property
    def n_cached(self) -> int:
        return sum(j.cached for j in self.jobs)

    @property
    def n_calls(self) -> int:
        return len(self.jobs) - self.n_cached

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def lines(self) -> list[str]:
        c = self.counts()
        cost = "unknown (no price for this model)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        out = [
            f"Judge {self.model_name} ({self.prompt['label']}): {c.get('sp', 0)} simulator-human pairs, "
            f"{c.get('hh', 0)} HH and {c.get('pp', 0)} PP anchor pairs x {self.samples} samples = "
            f"{len(self.jobs)} judgements; {self.n_cached} already made (answered from the cache, free), "
            f"{self.n_calls} calls to make: ~{self.prompt_tokens} prompt + ~{self.completion_tokens} "
            f"completion tokens, cost {cost}."
        ]
        for sim, n in sorted(self.unmatched.items()):
            out.append(f"{sim}: {n} simulated conversations have no human of their condition (not judged).")
        return out


def plan_judge(
    engine,
    data,
    model_name: str,
    samples: int = DEFAULT_SAMPLES,
    n_pairs: int | None = DEFAULT_PAIRS,
    prompt_version: str = DEFAULT_PROMPT,
    cost_of: Callable[[str, int, int], float | None] | None = None,
    texts: dict | None = None,
) -> JudgePlan:
    """Every judgement a run needs for a loaded study (``analysis.dataset.StudyData``), which of them
    are already stored, and the projected tokens and cost of the rest (~4 characters a token)."""
    if samples < 1:
        raise UserInputError("--judge-samples must be at least 1")
    if n_pairs is not None and n_pairs < 1:
        raise UserInputError("--judge-pairs must be at least 1")
    prompt = load_prompt(prompt_version)
    convs = data.conversations
    texts = texts if texts is not None else transcripts(engine, convs, data.language)
    convs = convs[convs["conversation_id"].isin(list(texts))]
    pairs = build_pairs(convs, n_pairs)
    cached = _cached_keys(engine, data.study_id)
    jobs = []
    for p in pairs:
        for s in range(samples):
            job = make_job(prompt, model_name, p, s, texts)
            job.cached = job.key in cached
            jobs.append(job)
    plan = JudgePlan(model_name, prompt, data.study_id, samples, pairs, jobs, _unmatched(convs))
    todo = [j for j in jobs if not j.cached]
    plan.prompt_tokens = sum(sum(len(m["content"]) for m in j.messages) // 4 for j in todo)
    plan.completion_tokens = EST_COMPLETION_TOKENS * len(todo)
    if cost_of is not None:
        plan.cost_usd = cost_of(model_name, plan.prompt_tokens, plan.completion_tokens)
        if todo and plan.cost_usd is not None:
            plan.per_call_usd = plan.cost_usd / len(todo)
    return plan


def _unmatched(convs: pd.DataFrame) -> dict:
    """simulator -> its conversations without a human of the same condition or scenario and task."""
    humans = convs[convs["user_kind"] == "human"]
    if humans.empty:
        return {}
    conds = set(humans["condition_id"])
    tasks = set(zip(humans["scenario"], humans["task_context_id"]))
    agents = convs[convs["user_kind"] == "agent"]
    out = {}
    for sim, g in agents.groupby(_population(agents)):
        alone = [
            c not in conds and (s, t) not in tasks
            for c, s, t in zip(g["condition_id"], g["scenario"], g["task_context_id"])
        ]
        if any(alone):
            out[sim] = int(sum(alone))
    return out


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class JudgeResult:
    judgements: pd.DataFrame
    calls: int = 0  # calls that reached the model
    cache_hits: int = 0
    errors: int = 0  # samples without a verdict
    budget_skipped: int = 0
    cost_usd: float = 0.0
    first_error: str | None = None


@dataclass
class _Run:
    model: object
    plan: JudgePlan
    sem: asyncio.Semaphore
    budget: float | None
    progress: Callable[[int, int], None] | None
    rows: list = field(default_factory=list)
    result: JudgeResult = field(default_factory=lambda: JudgeResult(pd.DataFrame()))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reserved: float = 0.0
    paid_calls: int = 0

    def reserve(self, job: Job) -> float | None:
        """The projected cost of the call, reserved; None when it would pass the budget (the spend,
        the calls in flight and this one). A stored judgement costs nothing."""
        if job.cached:
            return 0.0
        seen = self.result.cost_usd / self.paid_calls if self.paid_calls else None
        est = max((x for x in (seen, self.plan.per_call_usd) if x is not None), default=0.0)
        if self.budget is not None and self.result.cost_usd + self.reserved + est > self.budget:
            self.result.budget_skipped += 1
            return None
        self.reserved += est
        return est

    async def judge(self, job: Job) -> None:
        async with self.sem:
            async with self.lock:
                est = self.reserve(job)
            if est is None:
                return
            model = self.model.bind(conversation_id=int(job.pair.candidate_id))
            c, error = None, None
            try:
                c = await model.acomplete(job.messages, **job.params)
            except UserInputError:
                raise  # the caller's mistake (parameters, a key): the run stops
            except WorkbenchError as exc:
                error = str(exc)
            verdict = None
            if c is not None:
                verdict, error = parse_verdict(c.text)
                if error and c.call_id and not c.cached:
                    await model.worker.run(_mark_error, c.call_id, error)
        async with self.lock:
            self.reserved -= est
            self._count(job, c, verdict, error)

    def _count(self, job: Job, c, verdict, error) -> None:
        r = self.result
        cost = (c.cost_usd or 0.0) if c is not None else 0.0
        if c is not None and c.cached:
            r.cache_hits += 1
        else:
            r.calls += 1
            self.paid_calls += c is not None
        r.cost_usd += cost
        if error:
            r.errors += 1
            r.first_error = r.first_error or error
        p = job.pair
        self.rows.append(
            (p.kind, p.simulator, p.pair_id, p.candidate_id, p.other_id, p.cluster, job.sample, job.slot)
            + (verdict, error, cost, bool(c is not None and c.cached))
        )
        if self.progress:
            self.progress(len(self.rows), len(self.plan.jobs))


def _mark_error(conn, call_id: int, error: str) -> None:
    """Write the parse error on the call's row: it is counted, and not served from the cache again."""
    t = LLMCall.__table__
    conn.execute(update(t).where(t.c.id == call_id).values(error=f"judge: {error}"))


async def run_judge(
    engine,
    plan: JudgePlan,
    model,
    concurrency: int = 4,
    budget: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JudgeResult:
    """Make (or find in the cache) every judgement of ``plan`` with ``model`` (recorded, purpose
    "judge", cache on), ``concurrency`` calls at once; with ``budget`` (USD) no call starts whose
    projected cost, added to the spend and the calls in flight, would pass it (a rerun continues).
    The model's async resources are closed at the end."""
    from db.leases import acquire, process_owner, release

    if concurrency < 1:
        raise UserInputError("--concurrency must be at least 1")
    if budget is not None and budget < 0:
        raise UserInputError(f"--budget must be at least 0 (USD), got {budget}")
    bound = model.bind(study_id=plan.study_id, prompt_version=plan.prompt["label"], purpose=PURPOSE)
    run = _Run(bound, plan, asyncio.Semaphore(concurrency), budget, progress)
    job_key, owner = f"judge:{plan.study_id}:{plan.model_name}", process_owner()
    acquire(engine, job_key, owner, f"judging of study {plan.study_id} by {plan.model_name}")
    try:
        await asyncio.gather(*(run.judge(j) for j in plan.jobs))
    finally:
        release(engine, job_key, owner)
        await model.aclose()
    run.result.judgements = pd.DataFrame(run.rows, columns=JUDGEMENT_COLUMNS)
    return run.result


def run_judge_sync(*args, **kw) -> JudgeResult:
    return asyncio.run(run_judge(*args, **kw))


def judge_tables(
    judgements: pd.DataFrame, model_name: str, prompt_label: str, samples: int, n_boot: int = 1000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per simulator, ``judge_pi`` / ``judge_pi_calibrated`` fidelity records)."""
    summary = judge_summary(pair_scores(judgements), n_boot=n_boot)
    return summary, judge_records(summary, model_name, prompt_label, samples)


# --------------------------------------------------------------------------------------------------
# Stored judgements (the report): found again by their cache keys, nothing called
# --------------------------------------------------------------------------------------------------


def _stored_models(engine, study_id: int, label: str) -> list[tuple[str, int]]:
    from sqlalchemy import func

    t = LLMCall.__table__
    q = (
        select(t.c.model, func.count())
        .where(t.c.purpose == PURPOSE, t.c.study_id == study_id, t.c.prompt_version == label)
        .where(t.c.error.is_(None), t.c.cache_hit.is_(False))
        .group_by(t.c.model)
        .order_by(func.count().desc(), t.c.model)
    )
    with engine.connect() as conn:
        return [(m, int(n)) for m, n in conn.execute(q)]


def _stored_replies(engine, study_id: int, model: str) -> dict[str, str]:
    t = LLMCall.__table__
    q = (
        select(t.c.cache_key, t.c.response)
        .where(t.c.purpose == PURPOSE, t.c.study_id == study_id, t.c.model == model)
        .where(t.c.error.is_(None), t.c.cache_hit.is_(False))
    )
    with engine.connect() as conn:
        return {k: r for k, r in conn.execute(q) if k}


def stored_judgements(engine, data, prompt_version: str = DEFAULT_PROMPT) -> dict | None:
    """The judgements already made for a loaded study by its most used judge model (no call):
    ``{"judgements", "model", "prompt", "samples", "note"}``, or None when there are none."""
    prompt = load_prompt(prompt_version)
    models = _stored_models(engine, data.study_id, prompt["label"])
    if not models:
        return None
    model = models[0][0]
    replies = _stored_replies(engine, data.study_id, model)
    texts = transcripts(engine, data.conversations, data.language)
    convs = data.conversations[data.conversations["conversation_id"].isin(list(texts))]
    rows, most = [], 0
    for p in build_pairs(convs, None):
        for s in range(MAX_STORED_SAMPLES):
            job = make_job(prompt, model, p, s, texts)
            if job.key not in replies:
                break
            verdict, error = parse_verdict(replies[job.key])
            most = max(most, s + 1)
            rows.append(
                (p.kind, p.simulator, p.pair_id, p.candidate_id, p.other_id, p.cluster, s, job.slot)
                + (verdict, error, 0.0, True)
            )
    if not rows:
        return None
    others = ", ".join(m for m, _n in models[1:])
    return {
        "judgements": pd.DataFrame(rows, columns=JUDGEMENT_COLUMNS),
        "model": model,
        "prompt": prompt["label"],
        "samples": most,
        "note": f"other judge models with stored judgements: {others}" if others else "",
    }


def attach_stored_judge(engine, result, n_boot: int = 1000) -> None:
    """Add the stored judgements' fidelity rows and the three-way indistinguishability table to an
    ``analysis.report.AnalysisResult`` (``result.fidelity``), calling no model."""
    from analysis.fidelity import ranking_df
    from analysis.indistinguishability import indistinguishability_tables, with_judge_records

    records = result.fidelity.get("records")
    if records is None:
        return
    stored = stored_judgements(engine, result.data)
    summary = None
    if stored is not None:
        summary, judge_recs = judge_tables(
            stored["judgements"], stored["model"], stored["prompt"], stored["samples"], n_boot
        )
        records = with_judge_records(records, judge_recs)
        label_index = dict(zip(result.fidelity["ranking"]["simulator"], result.fidelity["ranking"]["labels"]))
        result.fidelity["records"] = records
        result.fidelity["ranking"] = ranking_df(records, label_index)
    tables = indistinguishability_tables(engine, result.data, records, summary)
    three = tables["three_way"]
    if three[["annotators_balanced_accuracy", "judge_win_rate"]].notna().any().any():
        result.fidelity["indistinguishability"] = tables["three_way"]
        result.fidelity["indistinguishability_agreement"] = tables["agreement"]


def fidelity_suite(engine, data, likeness=None, splits: int = 20, n_boot: int = 200) -> dict:
    """Every fidelity table of a loaded study as ``workbench likeness`` writes them, calling no model:
    the label-free records and ranking (``analysis.fidelity.study_fidelity``), the participants'
    instruments (comparison rows as ``instruments``; survey error, twins and rank agreement in the
    records) and the stored judgements with the three-way indistinguishability table. For pages
    (the dashboard) that show the whole suite."""
    from types import SimpleNamespace

    from analysis.fidelity import label_index_of, study_fidelity
    from analysis.instruments import merge_fidelity, study_instruments

    tables = study_fidelity(engine, data, splits=splits, n_boot=n_boot, likeness=likeness)
    inst = study_instruments(engine, data, splits=splits, fidelity_boot=n_boot)
    tables = merge_fidelity(tables, inst["records"], label_index_of(likeness))
    tables["instruments"] = inst["comparisons"]
    holder = SimpleNamespace(fidelity=tables, data=data)
    attach_stored_judge(engine, holder, n_boot=n_boot)
    return holder.fidelity
