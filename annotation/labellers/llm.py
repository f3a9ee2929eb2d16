"""LLM labeller: codebook -> versioned prompt -> n JSON samples -> majority vote (median for scales).

Every conversation ends up with a label per conversation-level dimension and, for a turn-level
dimension, a label per eligible turn (every turn of the dimension's ``turn_role``, stored with its
``turn_index``): the vote of the valid samples (``samples`` keeps all of them, ``flagged`` marks
disagreement or failed samples), or, when every sample failed, a label with ``status="failed"`` and
the error as rationale. Nothing is silently dropped. A turn-level dimension is asked for as a JSON
object mapping each eligible turn's number to a label, and a reply missing a turn or giving a value
outside the label set goes through the same corrective retry as any invalid reply.

The model comes from the caller (annotation does not know the providers): anything that satisfies
``LabellingModel``, already wrapped for recording and caching (``workbench.llm.recorded(...,
purpose="labeller")``: provenance + response cache; each sample has its own seed so samples are not
answered from one cached reply). The labeller binds the study, prompt version and conversation to
every call it makes. Source name ``llm:<model>:<prompt version>``.

Example::

    model = recorded(get_model("openai/gpt-4o-mini"), engine, purpose="labeller")
    summary = await label_with_llm(engine, "pilot", model, load_codebook(), samples=3)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from annotation.store import LabelRecord, ensure_source, existing_keys, write_labels
from db.errors import UserInputError, WorkbenchError, yaml_problem
from db.leases import acquire, heartbeat, process_owner, release
from db.models import LabelSource
from db.models.core import UNFINISHED_STATUSES
from db.repo import conversations_df, get_study, turns_df


class JsonReply(Protocol):
    """One structured reply: the parsed JSON (valid against the schema) and its cost (None: unknown)."""

    data: Any
    cost_usd: float | None


class LabellingModel(Protocol):
    """What the LLM labeller needs of a chat model (``workbench.llm.RecordedModel`` is one).

    ``acomplete_json`` returns a reply whose ``data`` satisfies ``schema`` (retrying an invalid reply
    up to ``json_retries`` times) or raises a ``WorkbenchError`` when the call fails; a
    ``UserInputError`` (bad parameters, a missing key) is the caller's mistake and stops the run.
    ``bind`` returns a copy that records calls with more context (``study_id``, ``conversation_id``,
    ``prompt_version``, ``purpose``); ``aclose`` releases what async calls opened on the event loop.
    """

    name: str  # "provider/model"

    async def acomplete_json(
        self, messages: list[dict], schema: dict, json_retries: int = 1, **params: Any
    ) -> JsonReply: ...

    def bind(self, **context: Any) -> LabellingModel: ...

    async def aclose(self) -> None: ...


# USD of (model name, prompt tokens, completion tokens), None when the model has no price.
CostFunction = Callable[[str, int, int], "float | None"]

PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPT = "v2"
# Rough reply size per dimension (value + a short rationale), for the dry-run projection ...
EST_COMPLETION_TOKENS_PER_DIM = 30
# ... plus, for a turn-level dimension, this much per labelled turn ("3": "cant_tell", ...).
EST_COMPLETION_TOKENS_PER_TURN = 10
# Template keys a prompt needs to ask for turn-level dimensions (v1 has none of them).
TURN_PROMPT_KEYS = {"turn_dimension", "answer_turns", "turn_target"}


def load_prompt(version: str = DEFAULT_PROMPT, directory: Path = PROMPT_DIR) -> dict:
    path = Path(directory) / f"labeller_{version}.yaml"
    if not path.exists():
        known = sorted(p.stem.removeprefix("labeller_") for p in Path(directory).glob("labeller_*.yaml"))
        raise UserInputError(f"no labeller prompt version {version!r} (known: {', '.join(known)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, " in the labeller prompt")) from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a labeller prompt is a mapping with version, system, dimension, ...")
    missing = {"version", "system", "dimension", "label_line", "aspects", "user", "turn"} - set(data)
    if missing:
        raise UserInputError(f"{path.name}: missing keys {sorted(missing)}")
    partial = TURN_PROMPT_KEYS & set(data)
    if partial and partial != TURN_PROMPT_KEYS:
        raise UserInputError(
            f"{path.name}: turn-level templates need all of {sorted(TURN_PROMPT_KEYS)} "
            f"(missing {sorted(TURN_PROMPT_KEYS - partial)})"
        )
    return data


def supports_turns(prompt: dict) -> bool:
    """Whether the prompt version can ask for turn-level dimensions (v1 cannot)."""
    return TURN_PROMPT_KEYS <= set(prompt)


def eligible_turns(dimension, turns: Sequence[dict]) -> list[int]:
    """Indices of the turns a turn-level dimension labels: every turn of its ``turn_role``."""
    return [int(t["index"]) for t in turns if t["role"] == dimension.turn_role]


def applicable(dimensions, turns: Sequence[dict]) -> list:
    """The dimensions that have something to label in this conversation: every conversation-level
    one, and a turn-level one when the conversation has a turn of its role."""
    return [d for d in dimensions if d.level == "conversation" or eligible_turns(d, turns)]


def source_name(model_name: str, prompt_version: str) -> str:
    return f"llm:{model_name}:{prompt_version}"


def response_schema(dimensions, turns: Sequence[dict] | None = None) -> dict:
    """JSON schema of one reply: every dimension's value restricted to its label set; a turn-level
    dimension's value is an object with one required key per eligible turn of ``turns`` (the turn
    index as a string) and no other key."""
    props = {}
    for d in dimensions:
        if d.level == "conversation":
            props[d.name] = d.json_schema()
            continue
        if turns is None:
            raise ValueError(f"{d.name} is turn-level: the schema needs the conversation's turns")
        keys = [str(i) for i in eligible_turns(d, turns)]
        props[d.name] = {
            "type": "object",
            "properties": {k: d.json_schema() for k in keys},
            "required": keys,
            "additionalProperties": False,
        }
    props["rationale"] = {}
    return {"type": "object", "properties": props, "required": [d.name for d in dimensions]}


def build_messages(
    prompt: dict,
    codebook_version: str,
    dimensions,
    turns: Sequence[dict],
    scenario: str | None,
    lang: str = "en",
) -> list[dict]:
    """The system and user messages for one conversation. Turn-level dimensions use the prompt's
    ``turn_dimension`` block and ``answer_turns`` instruction, which list the turns to label."""
    turn_dims = [d for d in dimensions if d.level != "conversation"]
    if turn_dims and not supports_turns(prompt):
        raise UserInputError(
            f"prompt {prompt['version']} cannot ask for turn-level dimensions "
            f"({', '.join(d.name for d in turn_dims)}); use prompt version {DEFAULT_PROMPT}"
        )
    blocks = []
    for d in dimensions:
        lines = "\n".join(
            prompt["label_line"].format(value=v, definition=d.label_definition(v, lang) or "")
            for v in d.labels
        )
        aspects = d.aspect_names(scenario, lang) if scenario else []
        template = prompt["dimension"] if d.level == "conversation" else prompt["turn_dimension"]
        blocks.append(
            template.format(
                name=d.name,
                title=d.display_title(lang),
                definition=str(d.definition.get(lang) or ""),
                label_lines=lines,
                role=d.turn_role or "",
                aspects=prompt["aspects"].format(scenario=scenario, aspects=", ".join(aspects))
                if aspects
                else "",
            )
        )
    system = prompt["system"].format(codebook_version=codebook_version, dimensions="\n\n".join(blocks))
    transcript = "\n".join(
        prompt["turn"].format(index=t["index"], role=t["role"].capitalize(), content=t["content"])
        for t in turns
    )
    names = ", ".join(d.name for d in dimensions)
    if turn_dims:
        targets = "\n".join(
            prompt["turn_target"].format(
                name=d.name,
                role=d.turn_role,
                indices=", ".join(map(str, eligible_turns(d, turns))),
                keys=", ".join(f'"{i}"' for i in eligible_turns(d, turns)),
            )
            for d in turn_dims
        )
        answer = prompt["answer_turns"].format(names=names, turn_targets=targets)
    else:
        answer = prompt["answer"].format(names=names) if "answer" in prompt else ""
    user = prompt["user"].format(
        scenario=(scenario or "unspecified").replace("_", " "),
        transcript=transcript,
        names=names,
        answer=answer,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def aggregate(values: Sequence[str], dimension) -> tuple[str | None, bool]:
    """(voted value, disagreement). Nominal: majority (ties go to the label listed first in the
    codebook, and are flagged). Ordinal: median rank (lower middle for an even count)."""
    if not values:
        return None, True
    disagree = len(set(values)) > 1
    if dimension.scale == "ordinal":
        ranks = sorted(dimension.labels.index(v) for v in values)
        return dimension.labels[ranks[(len(ranks) - 1) // 2]], disagree
    counts = Counter(values)
    top = max(counts.values())
    winners = [v for v in dimension.labels if counts.get(v) == top]
    return winners[0], disagree


@dataclass
class LabelPlan:
    source: str
    conversations: int
    dimensions: list[str]
    samples: int
    calls: int
    labels: int  # labels the run will store (conversation-level + one per eligible turn)
    turn_labels: int  # of which per-turn
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when the model has no price (or no cost function was given)
    already_labelled: int = 0  # conversations the run skips (labelled ok by this source; not with overwrite)


@dataclass
class LabelSummary:
    source: str
    conversations: int = 0
    labels: int = 0
    flagged: int = 0
    failed: int = 0
    skipped_existing: int = 0
    # Conversations with nothing to label: unfinished (in progress, failed, stopped), no turns, or
    # only turn-level dimensions and no turn of their role.
    skipped_empty: int = 0
    samples: int = 0  # samples requested (JSON retries and HTTP retries come on top)
    cost_usd: float = 0.0
    errors: list[str] = field(default_factory=list)
    budget_skipped: int = 0  # conversations not started because the budget would have been passed


def _dimensions(codebook, dimensions: Iterable[str] | None, prompt: dict) -> list:
    if dimensions is None:
        # Every dimension of the codebook the prompt can ask for: all of them from v2 on; a prompt
        # without turn-level templates (v1) does the conversation-level ones.
        dims = codebook.select(None) if supports_turns(prompt) else codebook.conversation_dimensions()
    else:
        dims = codebook.select(list(dimensions))
        turn = [d.name for d in dims if d.level != "conversation"]
        if turn and not supports_turns(prompt):
            raise UserInputError(
                f"prompt {prompt['version']} cannot ask for turn-level dimensions ({', '.join(turn)}); "
                f"use prompt version {DEFAULT_PROMPT} or later"
            )
    if not dims:
        raise UserInputError("no dimensions to label")
    return dims


def _select(
    engine: Engine,
    study: str,
    codebook,
    dimensions: Iterable[str] | None,
    conversation_ids: Iterable[int] | None,
    limit: int | None,
    prompt: dict,
):
    dims = _dimensions(codebook, dimensions, prompt)
    with Session(engine) as session:
        st = get_study(session, study)
        convs = conversations_df(session, st.id, conversation_ids)
        turns = turns_df(session, st.id, conversation_ids)
    # Not whole conversations (still going on, failed, stopped by a budget): nothing to judge yet,
    # and a simulation that resumes one rewrites its turns. The analysis leaves them out too.
    unfinished = convs["status"].isin(UNFINISHED_STATUSES)
    n_empty = int(((convs["n_turns"] == 0) | unfinished).sum())
    convs = convs[(convs["n_turns"] > 0) & ~unfinished]
    if limit is not None:
        convs = convs.head(limit)
    by_conv = {
        cid: g[["index", "role", "content"]].to_dict("records") for cid, g in turns.groupby("conversation_id")
    }
    return st, dims, convs, by_conv, n_empty


def _schema_text(schema: dict) -> str:
    """Stand-in for the JSON instruction a model appends, when the caller gives none."""
    return json.dumps(schema, ensure_ascii=False)


def plan_labelling(
    engine: Engine,
    study: str,
    model_name: str,
    codebook,
    dimensions=None,
    samples: int = 3,
    prompt_version: str = DEFAULT_PROMPT,
    conversation_ids=None,
    limit=None,
    overwrite: bool = False,
    cost_of: CostFunction | None = None,
    json_instruction: Callable[[dict], str] | None = None,
) -> LabelPlan:
    """Projected calls, tokens and cost of what label_with_llm would call: conversations already
    labelled by this source are left out unless ``overwrite`` (no call made, nothing written).

    ``cost_of(model, prompt tokens, completion tokens)`` prices the projection (without it the cost
    is unknown, None); ``json_instruction(schema)`` is the text the model adds to a structured call
    (``workbench.llm.base.json_instruction``), counted in the prompt tokens."""
    if samples < 1:
        raise UserInputError("samples must be at least 1")
    instruction_of = json_instruction or _schema_text
    prompt = load_prompt(prompt_version)
    _st, dims, convs, by_conv, _empty = _select(
        engine, study, codebook, dimensions, conversation_ids, limit, prompt
    )
    name = source_name(model_name, prompt["version"])
    done = set() if overwrite else _labelled_keys(engine, name)
    p_tokens = c_tokens = n_convs = n_labels = n_turn_labels = n_existing = 0
    for row in convs.itertuples():
        turns = by_conv.get(row.conversation_id, [])
        conv_dims = applicable(dims, turns)
        if not conv_dims:
            continue
        if done and all(k in done for k in _item_keys(row.conversation_id, conv_dims, turns)):
            n_existing += 1
            continue
        n_convs += 1
        msgs = build_messages(prompt, codebook.version, conv_dims, turns, row.scenario)
        # ~4 characters a token, including the JSON instruction (with the schema) the model appends.
        instruction = instruction_of(response_schema(conv_dims, turns))
        p_tokens += (sum(len(m["content"]) for m in msgs) + len(instruction)) // 4
        # The reply: a value and a short rationale per dimension, plus a keyed value per labelled turn.
        n_turns = sum(len(eligible_turns(d, turns)) for d in conv_dims if d.level != "conversation")
        c_tokens += EST_COMPLETION_TOKENS_PER_DIM * len(conv_dims) + EST_COMPLETION_TOKENS_PER_TURN * n_turns
        n_labels += sum(d.level == "conversation" for d in conv_dims) + n_turns
        n_turn_labels += n_turns
    return LabelPlan(
        source=name,
        conversations=n_convs,
        dimensions=[d.name for d in dims],
        samples=samples,
        calls=n_convs * samples,
        labels=n_labels,
        turn_labels=n_turn_labels,
        prompt_tokens=p_tokens * samples,
        completion_tokens=c_tokens * samples,
        cost_usd=cost_of(model_name, p_tokens * samples, c_tokens * samples) if cost_of else None,
        already_labelled=n_existing,
    )


def _labelled_keys(engine: Engine, source: str) -> set:
    """(conversation, dimension, turn index) keys the source labelled ok (empty for a new source)."""
    with Session(engine) as session:
        src = session.exec(select(LabelSource).where(LabelSource.name == source)).first()
        return existing_keys(session, src.id) if src is not None else set()


def _item_keys(conversation_id, conv_dims, turns) -> list[tuple]:
    """(conversation, dimension, turn index) of every item a run labels in one conversation."""
    return [
        (conversation_id, d.name, i)
        for d in conv_dims
        for i in ([-1] if d.level == "conversation" else eligible_turns(d, turns))
    ]


def _items(dimension, turns: Sequence[dict]) -> list[int]:
    """A conversation-level dimension is one item (turn index -1); a turn-level one an item per
    eligible turn, whose value in a valid reply is data[dim][str(turn index)]."""
    return [-1] if dimension.level == "conversation" else eligible_turns(dimension, turns)


def _records(conversation_id: int, conv_dims, turns, valid, errors: list[str], samples: int) -> list:
    """The labels of one conversation from its samples' replies: the vote of the valid ones, or a
    failed label carrying the first error when none was valid."""
    records = []
    for d in conv_dims:
        for idx in _items(d, turns):
            if idx < 0:
                values = [c.data[d.name] for c in valid]
            else:
                values = [c.data[d.name][str(idx)] for c in valid]
            value, disagree = aggregate(values, d)
            if value is None:
                records.append(
                    LabelRecord(
                        conversation_id,
                        d.name,
                        None,
                        turn_index=idx,
                        samples=[None] * samples,
                        flagged=True,
                        status="failed",
                        rationale=f"all {samples} samples failed: {errors[0]}",
                    )
                )
            else:
                records.append(
                    LabelRecord(
                        conversation_id,
                        d.name,
                        value,
                        turn_index=idx,
                        samples=values + [None] * len(errors),
                        flagged=disagree or bool(errors),
                        rationale=_rationale(valid, d.name, idx),
                    )
                )
    return records


@dataclass
class _Run:
    """One labelling run's settings and shared state, for the per-conversation coroutines."""

    engine: Engine
    model: LabellingModel  # bound to the study and prompt version
    codebook: Any
    prompt: dict
    by_conv: dict
    source: Any  # LabelSource
    summary: LabelSummary
    samples: int
    temperature: float | None
    json_retries: int
    seed: int
    job: str
    owner: str
    total: int
    progress: Callable[[int, int], None] | None
    sem: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: int = 0
    budget: float | None = None  # USD for this run; None: no cap
    cost_estimate: float | None = None  # USD per conversation, from the plan (before any is done)
    reserved: float = 0.0  # projected cost of the conversations in flight

    def _estimate(self) -> float:
        """Projected cost of one more conversation: the larger of the plan's figure and the mean of
        those done so far (a plan that guessed low must not let the calls in flight overshoot)."""
        s = self.summary
        seen = s.cost_usd / s.conversations if s.conversations else None
        return max((x for x in (seen, self.cost_estimate) if x is not None), default=0.0)

    def reserve(self) -> float | None:
        """Reserve the projected cost of one conversation, or None when that would pass the budget:
        the spend so far plus every conversation in flight decides, so calls already running never
        carry the run past its cap."""
        est = self._estimate()
        if self.budget is not None and self.summary.cost_usd + self.reserved + est > self.budget:
            self.summary.budget_skipped += 1
            return None
        self.reserved += est
        return est

    async def sample(self, model: LabellingModel, msgs: list[dict], schema: dict, i: int):
        """(reply, None) or (None, error) for sample ``i`` (seed + i)."""
        params: dict[str, Any] = {"seed": self.seed + i}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        try:
            return await model.acomplete_json(msgs, schema, json_retries=self.json_retries, **params), None
        except UserInputError:
            raise  # the caller's mistake (parameters, a key): the run stops
        except WorkbenchError as exc:
            return None, str(exc)

    async def label(self, row, conv_dims) -> None:
        turns = self.by_conv.get(row.conversation_id, [])
        msgs = build_messages(self.prompt, self.codebook.version, conv_dims, turns, row.scenario)
        schema = response_schema(conv_dims, turns)
        model = self.model.bind(conversation_id=int(row.conversation_id), purpose="labeller")
        async with self.sem:
            async with self.lock:
                reserved = self.reserve()
            if reserved is None:
                return
            results = await asyncio.gather(
                *(self.sample(model, msgs, schema, i) for i in range(self.samples))
            )
        valid = [c for c, _e in results if c is not None]
        errors = [e for _c, e in results if e is not None]
        records = _records(int(row.conversation_id), conv_dims, turns, valid, errors, self.samples)
        async with self.lock:
            self.reserved -= reserved
            self.store(records, valid, errors)

    def store(self, records: list, valid: list, errors: list[str]) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            write_labels(session, session.get(type(self.source), self.source.id), records)
            session.commit()
        s = self.summary
        s.conversations += 1
        s.labels += len(records)
        s.flagged += sum(r.flagged and r.status == "ok" for r in records)
        s.failed += sum(r.status == "failed" for r in records)
        s.samples += self.samples
        s.cost_usd += sum(c.cost_usd or 0.0 for c in valid)
        s.errors.extend(errors[:1])
        self.done += 1
        heartbeat(self.engine, self.job, self.owner)
        if self.progress:
            self.progress(self.done, self.total)


def _todo(convs, dims, by_conv, done: set, summary: LabelSummary) -> list:
    """(row, dimensions) of the conversations to label; counts the others on ``summary``."""
    todo = []
    for row in convs.itertuples():
        turns = by_conv.get(row.conversation_id, [])
        conv_dims = applicable(dims, turns)
        if not conv_dims:
            summary.skipped_empty += 1  # e.g. only turn-level dimensions and no turn of their role
            continue
        if all(k in done for k in _item_keys(row.conversation_id, conv_dims, turns)):
            summary.skipped_existing += 1
        else:
            todo.append((row, conv_dims))
    return todo


async def label_with_llm(
    engine: Engine,
    study: str,
    model: LabellingModel,
    codebook,
    dimensions=None,
    samples: int = 3,
    temperature: float | None = 0.7,
    concurrency: int = 4,
    prompt_version: str = DEFAULT_PROMPT,
    conversation_ids=None,
    limit=None,
    json_retries: int = 1,
    overwrite: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    budget: float | None = None,
    cost_estimate: float | None = None,
) -> LabelSummary:
    """Label the study's conversations with ``model`` (a ``LabellingModel``, recorded and cached by
    the caller). Conversations already labelled ok on every chosen dimension by this source are
    skipped unless ``overwrite``; failed ones are tried again (a model without its response cache
    asks afresh rather than replays). With ``budget`` (USD) no conversation starts whose projected
    cost (``cost_estimate`` per conversation, or the mean so far when larger), added to the spend and
    the conversations in flight, would pass it; a rerun continues. The model's async resources are
    closed at the end: they belong to this event loop."""
    if budget is not None and budget < 0:
        raise UserInputError("budget must be at least 0 (USD)")
    if samples < 1:
        raise UserInputError("samples must be at least 1")
    if concurrency < 1:
        raise UserInputError("concurrency must be at least 1")
    prompt = load_prompt(prompt_version)
    st, dims, convs, by_conv, n_empty = _select(
        engine, study, codebook, dimensions, conversation_ids, limit, prompt
    )
    name = source_name(model.name, prompt["version"])
    with Session(engine, expire_on_commit=False) as session:
        src = ensure_source(
            session,
            name,
            "llm",
            model=model.name,
            prompt_version=prompt["version"],
            codebook_version=codebook.version,
            params={"samples": samples, "temperature": temperature, "json_retries": json_retries},
        )
        session.commit()
        done = existing_keys(session, src.id) if not overwrite else set()
    summary = LabelSummary(source=name, skipped_empty=n_empty)
    todo = _todo(convs, dims, by_conv, done, summary)
    run = _Run(
        engine=engine,
        model=model.bind(study_id=st.id, prompt_version=prompt["version"], purpose="labeller"),
        codebook=codebook,
        prompt=prompt,
        by_conv=by_conv,
        source=src,
        summary=summary,
        samples=samples,
        temperature=temperature,
        json_retries=json_retries,
        seed=seed,
        job=f"label:{st.id}:{name}",
        owner=process_owner(),
        total=len(todo),
        progress=progress,
        sem=asyncio.Semaphore(concurrency),
        budget=budget,
        cost_estimate=cost_estimate,
    )
    try:
        await _label_all(run, todo, f"labelling of study {study!r} by {name}")
    finally:
        await model.aclose()  # the HTTP session belongs to this event loop
    return summary


async def _label_all(run: _Run, todo: list, what: str) -> None:
    if run.progress and todo:
        run.progress(0, len(todo))  # the bar (and its clock) starts before the first call
    if not todo:
        return
    # One process per (study, source): a second would make the same paid calls again.
    acquire(run.engine, run.job, run.owner, what)
    try:
        await asyncio.gather(*(run.label(r, conv_dims) for r, conv_dims in todo))
    finally:
        release(run.engine, run.job, run.owner)


def _rationale(valid, dim: str, turn_index: int) -> str | None:
    """The first valid sample's rationale for a dimension (and turn): "rationale" may be one
    sentence, a sentence per dimension, or for a turn-level dimension a sentence per turn."""
    if not valid:
        return None
    r = valid[0].data.get("rationale")
    if isinstance(r, dict):
        r = r.get(dim)
        if isinstance(r, dict):
            r = r.get(str(turn_index)) if turn_index >= 0 else None
    if isinstance(r, (str, int, float)) and str(r).strip():
        return str(r)
    return None


def label_with_llm_sync(*args, **kw) -> LabelSummary:
    return asyncio.run(label_with_llm(*args, **kw))


def llm_labels_df(summary: LabelSummary) -> pd.DataFrame:
    """One-row frame of a run's figures (for printing)."""
    return pd.DataFrame([summary.__dict__]).drop(columns=["errors"])
