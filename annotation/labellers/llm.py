"""LLM labeller: codebook -> versioned prompt -> n JSON samples -> majority vote (median for scales).

Every conversation ends up with a label per dimension: the vote of the valid samples (``samples``
keeps all of them, ``flagged`` marks disagreement or failed samples), or, when every sample failed,
a label with ``status="failed"`` and the error as rationale. Nothing is silently dropped. Calls go
through ``workbench.llm.recorded(..., purpose="labeller")`` (provenance + response cache; each
sample has its own seed so samples are not answered from one cached reply). Source name
``llm:<model>:<prompt version>``.

Example::

    summary = await label_with_llm(engine, "pilot", get_model("openai/gpt-4o-mini"), samples=3)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import pandas as pd
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation.store import LabelRecord, ensure_source, existing_keys, write_labels
from db.repo import conversations_df, get_study, turns_df
from workbench.errors import UserInputError

PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPT = "v1"
# Rough reply size per dimension (value + a short rationale), for the dry-run projection.
EST_COMPLETION_TOKENS_PER_DIM = 30


def load_prompt(version: str = DEFAULT_PROMPT, directory: Path = PROMPT_DIR) -> dict:
    path = Path(directory) / f"labeller_{version}.yaml"
    if not path.exists():
        known = sorted(p.stem.removeprefix("labeller_") for p in Path(directory).glob("labeller_*.yaml"))
        raise UserInputError(f"no labeller prompt version {version!r} (known: {', '.join(known)})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = {"version", "system", "dimension", "label_line", "aspects", "user", "turn"} - set(data)
    if missing:
        raise UserInputError(f"{path.name}: missing keys {sorted(missing)}")
    return data


def source_name(model_name: str, prompt_version: str) -> str:
    return f"llm:{model_name}:{prompt_version}"


def response_schema(dimensions) -> dict:
    """JSON schema of one reply: every dimension's value restricted to its label set."""
    props = {d.name: {"type": "string", "enum": list(d.labels)} for d in dimensions}
    props["rationale"] = {}
    return {"type": "object", "properties": props, "required": [d.name for d in dimensions]}


def build_messages(
    prompt: dict,
    codebook_version: str,
    dimensions,
    turns: Sequence[dict],
    scenario: Optional[str],
    lang: str = "en",
) -> list[dict]:
    blocks = []
    for d in dimensions:
        lines = "\n".join(
            prompt["label_line"].format(value=v, definition=d.label_definition(v, lang) or "")
            for v in d.labels
        )
        aspects = d.aspect_names(scenario, lang) if scenario else []
        blocks.append(
            prompt["dimension"].format(
                name=d.name,
                title=d.display_title(lang),
                definition=str(d.definition.get(lang) or ""),
                label_lines=lines,
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
    user = prompt["user"].format(
        scenario=(scenario or "unspecified").replace("_", " "),
        transcript=transcript,
        names=", ".join(d.name for d in dimensions),
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def aggregate(values: Sequence[str], dimension) -> tuple[Optional[str], bool]:
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
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Optional[float]  # None when the model has no price in the table


@dataclass
class LabelSummary:
    source: str
    conversations: int = 0
    labels: int = 0
    flagged: int = 0
    failed: int = 0
    skipped_existing: int = 0
    skipped_empty: int = 0  # conversations without turns: nothing to label
    samples: int = 0  # samples requested (JSON retries and HTTP retries come on top)
    cost_usd: float = 0.0
    errors: list[str] = field(default_factory=list)


def _select(
    engine: Engine,
    study: str,
    codebook,
    dimensions: Optional[Iterable[str]],
    conversation_ids: Optional[Iterable[int]],
    limit: Optional[int],
):
    dims = codebook.select(list(dimensions) if dimensions else None)
    if dimensions is None:
        dims = codebook.conversation_dimensions()
    elif turn := [d.name for d in dims if d.level != "conversation"]:
        raise UserInputError(f"the LLM labeller labels conversation-level dimensions; {turn} are turn-level")
    with Session(engine) as session:
        st = get_study(session, study)
        convs = conversations_df(session, st.id, conversation_ids)
        turns = turns_df(session, st.id, conversation_ids)
    n_empty = int((convs["n_turns"] == 0).sum())
    convs = convs[convs["n_turns"] > 0]
    if limit is not None:
        convs = convs.head(limit)
    by_conv = {
        cid: g[["index", "role", "content"]].to_dict("records") for cid, g in turns.groupby("conversation_id")
    }
    return st, dims, convs, by_conv, n_empty


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
) -> LabelPlan:
    """Projected calls, tokens and cost (no call made, nothing written)."""
    from workbench.llm.prices import cost_of

    prompt = load_prompt(prompt_version)
    _st, dims, convs, by_conv, _empty = _select(engine, study, codebook, dimensions, conversation_ids, limit)
    p_tokens = 0
    for row in convs.itertuples():
        msgs = build_messages(
            prompt, codebook.version, dims, by_conv.get(row.conversation_id, []), row.scenario
        )
        # ~4 characters a token, plus the JSON instruction the model wrapper appends.
        p_tokens += (sum(len(m["content"]) for m in msgs) + 200 * len(dims)) // 4
    calls = len(convs) * samples
    c_tokens = calls * EST_COMPLETION_TOKENS_PER_DIM * len(dims)
    cost = cost_of(model_name, p_tokens * samples, c_tokens)
    return LabelPlan(
        source=source_name(model_name, prompt["version"]),
        conversations=len(convs),
        dimensions=[d.name for d in dims],
        samples=samples,
        calls=calls,
        prompt_tokens=p_tokens * samples,
        completion_tokens=c_tokens,
        cost_usd=cost,
    )


async def label_with_llm(
    engine: Engine,
    study: str,
    model,
    codebook,
    dimensions=None,
    samples: int = 3,
    temperature: Optional[float] = 0.7,
    concurrency: int = 4,
    prompt_version: str = DEFAULT_PROMPT,
    conversation_ids=None,
    limit=None,
    json_retries: int = 1,
    overwrite: bool = False,
    seed: int = 0,
    cache: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> LabelSummary:
    """Label the study's conversations with ``model`` (a ChatModel; recorded here). Conversations
    already labelled ok on every chosen dimension by this source are skipped unless ``overwrite``;
    failed ones are tried again (with ``cache=False`` to ask the model afresh rather than replay)."""
    from workbench.llm import LLMError, recorded
    from workbench.llm.recording import RecordedModel

    if samples < 1:
        raise UserInputError("--samples must be at least 1")
    if concurrency < 1:
        raise UserInputError("--concurrency must be at least 1")
    prompt = load_prompt(prompt_version)
    st, dims, convs, by_conv, n_empty = _select(engine, study, codebook, dimensions, conversation_ids, limit)
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
    todo = []
    for row in convs.itertuples():
        if all((row.conversation_id, d.name, -1) in done for d in dims):
            summary.skipped_existing += 1
        else:
            todo.append(row)
    base = (
        model
        if isinstance(model, RecordedModel)
        else recorded(
            model, engine, purpose="labeller", study_id=st.id, prompt_version=prompt["version"], cache=cache
        )
    )
    schema = response_schema(dims)
    sem = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    n_done = 0

    async def one_sample(m, msgs, i):
        params = {"seed": seed + i}
        if temperature is not None:
            params["temperature"] = temperature
        try:
            c = await m.acomplete_json(msgs, schema, json_retries=json_retries, **params)
            return c, None
        except LLMError as exc:
            return None, str(exc)

    async def one(row):
        nonlocal n_done
        msgs = build_messages(
            prompt, codebook.version, dims, by_conv.get(row.conversation_id, []), row.scenario
        )
        m = base.bind(conversation_id=int(row.conversation_id), purpose="labeller")
        async with sem:
            results = await asyncio.gather(*(one_sample(m, msgs, i) for i in range(samples)))
        valid = [c for c, _e in results if c is not None]
        errors = [e for _c, e in results if e is not None]
        records = []
        for d in dims:
            values = [c.data[d.name] for c in valid]
            value, disagree = aggregate(values, d)
            rationale = None
            if valid and isinstance(valid[0].data.get("rationale"), (str, dict)):
                r = valid[0].data["rationale"]
                rationale = r.get(d.name) if isinstance(r, dict) else r
            if value is None:
                records.append(
                    LabelRecord(
                        int(row.conversation_id),
                        d.name,
                        None,
                        samples=[None] * samples,
                        flagged=True,
                        status="failed",
                        rationale=f"all {samples} samples failed: {errors[0]}",
                    )
                )
            else:
                records.append(
                    LabelRecord(
                        int(row.conversation_id),
                        d.name,
                        value,
                        samples=values + [None] * len(errors),
                        flagged=disagree or bool(errors),
                        rationale=str(rationale) if rationale else None,
                    )
                )
        async with lock:
            with Session(engine, expire_on_commit=False) as session:
                write_labels(session, session.get(type(src), src.id), records)
                session.commit()
            summary.conversations += 1
            summary.labels += len(records)
            summary.flagged += sum(r.flagged and r.status == "ok" for r in records)
            summary.failed += sum(r.status == "failed" for r in records)
            summary.samples += samples
            summary.cost_usd += sum(c.cost_usd or 0.0 for c in valid)
            summary.errors.extend(errors[:1])
            n_done += 1
            if progress:
                progress(n_done, len(todo))

    try:
        await asyncio.gather(*(one(r) for r in todo))
    finally:
        await base.aclose()  # the HTTP session belongs to this event loop
    return summary


def label_with_llm_sync(*args, **kw) -> LabelSummary:
    return asyncio.run(label_with_llm(*args, **kw))


def llm_labels_df(summary: LabelSummary) -> pd.DataFrame:
    """One-row frame of a run's figures (for printing)."""
    return pd.DataFrame([summary.__dict__]).drop(columns=["errors"])
