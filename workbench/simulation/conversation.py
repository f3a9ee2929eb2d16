"""One simulated conversation: the simulated user and the assistant take turns until the user ends
through its structured signal, or the maximum number of user turns is reached. With ``ratings``, the
simulated user also answers the participants' instruments (``workbench.simulation.rating``) in calls
of their own: after each assistant reply and after the task. Their messages and answers never enter
the conversation's turns, so the simulated user goes on exactly as without them."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from db.types import utcnow
from workbench.llm.base import LLMError
from workbench.simulation.rating import (
    RATED_BY,
    PostTaskAnswers,
    Rater,
    ReplyRating,
    parse_post_task,
    parse_reply_rating,
)
from workbench.simulation.user import SimulatedUser, UserReply, parse_user_reply


@dataclass
class TurnRecord:
    index: int
    role: str
    content: str
    created_at: Any
    completed_at: Any
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    llm_call_id: int | None
    meta: dict = field(default_factory=dict)
    # The call's Completion: with deferred recording its call_id is known only once its row is written.
    call: Any = field(default=None, repr=False, compare=False)
    # Assistant turns, with ratings on: the simulated user's answers and the rating call's Completion
    # (None when the call failed; ``rating.error`` says why there are no answers).
    rating: ReplyRating | None = None
    rating_call: Any = field(default=None, repr=False, compare=False)


@dataclass
class Ratings:
    """The simulated user's answers to the instruments: the prompts, the (recorded) model that
    answers them and its call parameters."""

    rater: Rater
    model: Any
    params: dict = field(default_factory=dict)


@dataclass
class ConversationResult:
    end_reason: str  # user_ended | max_turns | simulator_empty
    ended_by: str  # user | system
    n_user_turns: int
    cost_usd: float
    n_calls: int
    tokens: int
    turns: list[TurnRecord]
    # With ratings on: the post-task answers and their call (None: not asked or the call failed).
    post_task: PostTaskAnswers | None = None
    post_task_call: Any = field(default=None, repr=False, compare=False)


async def _maybe(fn: Callable | None, *args: Any) -> Any:
    if fn is None:
        return None
    out = fn(*args)
    if inspect.isawaitable(out):
        return await out
    return out


async def _user_reply(
    call: Callable, simulator: Any, user: SimulatedUser, turns: list[dict], n_user: int, params: dict
) -> tuple[Any, UserReply, dict]:
    """The simulated user's next message: its call, the parsed reply and the turn's meta. An end
    before the minimum of turns is refused: asked once more with a note, then ignored."""
    meta: dict = {}
    c = await call(simulator, user.messages(turns), params)
    reply = parse_user_reply(c.text)
    if reply.end and n_user < user.ctx.min_turns:
        # Too early: ask once more with a note instead of letting the user leave.
        meta["early_end_refused"] = True
        c = await call(simulator, user.messages(turns, note=user.too_early_note(n_user)), params)
        reply = parse_user_reply(c.text)
        if reply.end:
            reply.end = False
            meta["end_ignored"] = True
    meta.update(parse=reply.parse, end=reply.end)
    return c, reply, meta


async def _ask(call: Callable, ratings: Ratings, messages: list[dict]) -> tuple[Any, str | None]:
    """A rating call: (its Completion, None) or (None, why it failed). A failed rating call is
    recorded (with its error) by the recording layer and never ends the conversation."""
    try:
        return await call(ratings.model, messages, ratings.params), None
    except LLMError as exc:
        return None, str(exc)


async def _rate_reply(call: Callable, ratings: Ratings, turns: list[dict]) -> tuple[Any, ReplyRating]:
    c, error = await _ask(call, ratings, ratings.rater.reply_messages(turns))
    return c, (ReplyRating(error=error) if c is None else parse_reply_rating(c.text))


async def _post_task(
    call: Callable, ratings: Ratings, turns: list[dict]
) -> tuple[Any, PostTaskAnswers | None]:
    messages = ratings.rater.post_task_messages(turns)
    if messages is None or not any(t["role"] == "assistant" for t in turns):  # nothing to judge
        return None, None
    c, error = await _ask(call, ratings, messages)
    if c is None:
        return None, PostTaskAnswers(error=error)
    return c, parse_post_task(c.text, ratings.rater.items, ratings.rater.ctx.language)


async def run_conversation(
    user: SimulatedUser,
    simulator: Any,
    assistant: Any,
    assistant_system: str | None = None,
    simulator_params: dict | None = None,
    assistant_params: dict | None = None,
    on_turn: Callable[[TurnRecord], Awaitable[None] | None] | None = None,
    before_call: Callable[[], Awaitable[None] | None] | None = None,
    after_call: Callable[[Any], Awaitable[None] | None] | None = None,
    call_failed: Callable[[], Awaitable[None] | None] | None = None,
    ratings: Ratings | None = None,
) -> ConversationResult:
    """Run one conversation. ``on_turn`` is called as each turn happens (the runner writes it to the
    database); ``before_call``/``after_call`` wrap every model call (rate limits, budget, cost), and
    ``call_failed`` replaces ``after_call`` for a call that raised. ``ratings``: the simulated user
    also rates each assistant reply (before its turn is handed to ``on_turn``) and answers the
    post-task questionnaire at the end (``ConversationResult.post_task``)."""
    sp, ap = dict(simulator_params or {}), dict(assistant_params or {})
    turns: list[dict] = []
    records: list[TurnRecord] = []
    n_user = 0
    cost = 0.0
    calls = tokens = 0

    async def call(model: Any, messages: list[dict], params: dict):
        nonlocal cost, calls, tokens
        await _maybe(before_call)
        try:
            c = await model.acomplete(messages, **params)
        except BaseException:
            await _maybe(call_failed)
            raise
        calls += 1
        tokens += c.usage.prompt_tokens + c.usage.completion_tokens
        cost += c.cost_usd or 0.0
        await _maybe(after_call, c)
        return c

    def record(role: str, content: str, c: Any, started: Any, t0: float, meta: dict) -> TurnRecord:
        return _record(len(turns), role, content, c, started, t0, meta)

    async def add(rec: TurnRecord) -> None:
        turns.append({"role": rec.role, "content": rec.content})
        records.append(rec)
        await _maybe(on_turn, rec)

    async def play() -> tuple[str, str]:
        nonlocal n_user
        while True:
            started, t0 = utcnow(), time.perf_counter()
            c, reply, meta = await _user_reply(call, simulator, user, turns, n_user, sp)
            if reply.end:
                if reply.message:
                    await add(record("user", reply.message, c, started, t0, meta))
                return "user_ended", "user"
            if not reply.message:
                return "simulator_empty", "system"
            await add(record("user", reply.message, c, started, t0, meta))
            n_user += 1

            started, t0 = utcnow(), time.perf_counter()
            messages = ([{"role": "system", "content": assistant_system}] if assistant_system else []) + turns
            a = await call(assistant, messages, ap)
            rec = record("assistant", a.text, a, started, t0, {})
            if ratings is not None:
                # The rating sees the reply; ``turns`` (what the simulated user goes on with) does not change.
                rec.rating_call, rec.rating = await _rate_reply(
                    call, ratings, [*turns, {"role": "assistant", "content": a.text}]
                )
                rec.meta = _rating_meta(ratings, rec.rating)
            await add(rec)
            if n_user >= user.ctx.max_turns:
                return "max_turns", "system"

    reason, by = await play()
    post_call, post = await _post_task(call, ratings, turns) if ratings is not None else (None, None)
    return ConversationResult(reason, by, n_user, cost, calls, tokens, records, post, post_call)


def _record(index: int, role: str, content: str, c: Any, started: Any, t0: float, meta: dict) -> TurnRecord:
    """The turn ``c`` produced, finished now (its call started at ``started``, ``t0``)."""
    return TurnRecord(
        index=index,
        role=role,
        content=content,
        created_at=started,
        completed_at=utcnow(),
        latency_ms=(time.perf_counter() - t0) * 1000,
        prompt_tokens=c.usage.prompt_tokens,
        completion_tokens=c.usage.completion_tokens,
        llm_call_id=c.call_id,
        meta=meta,
        call=c,
    )


def _rating_meta(ratings: Ratings, rating: ReplyRating) -> dict:
    """The assistant turn's meta: who rated it, with which prompt, and why there are no answers."""
    meta = {"rated_by": RATED_BY, "rating_prompt": ratings.rater.label}
    if rating.error:
        meta["rating_error"] = rating.error
    return meta


def simulate(user: SimulatedUser, simulator: Any, assistant: Any, **kw: Any) -> ConversationResult:
    """Synchronous wrapper of ``run_conversation`` (scripts, notebooks, tests)."""
    return asyncio.run(run_conversation(user, simulator, assistant, **kw))
