"""The model interface: one normalised ``Completion`` from every provider, sync, async and streaming.

Providers implement three hooks (``_call``, ``_acall``, ``_stream_pieces``); this module adds what
every provider shares: message and parameter validation, retries with exponential backoff and jitter
(honouring Retry-After), JSON output validated against a JSON schema, and pricing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db.errors import UserInputError, WorkbenchError

ROLES = ("system", "user", "assistant")
SECRET_OPTIONS = {"api_key", "auth_token", "token", "password"}


class LLMError(WorkbenchError):
    """A model call failed after retries (or cannot succeed); the message says what to do."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    model: str  # "provider/model" as asked for
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    raw: dict | None = None  # compact provider record (id, model, finish reason, usage)
    data: Any = None  # parsed JSON (complete_json)
    cost_usd: float | None = None
    call_id: int | None = None  # LLMCall id when recorded
    cached: bool = False
    finish_reason: str | None = None
    attempts: int = 1
    response: Any = field(default=None, repr=False)  # the SDK's full response object (not stored)
    # With deferred recording: the future of the LLMCall write (call_id is set when it is done).
    record: Any = field(default=None, repr=False)


class BaseOptions(BaseModel):
    """Options shared by the network providers (given to ``get_model``)."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts and connection errors")
    backoff_base: float = Field(0.5, ge=0, description="first backoff in seconds (doubles per retry)")
    backoff_max: float = Field(30.0, ge=0, description="longest wait between retries in seconds")


class CallParams(BaseModel):
    """Per-call generation parameters common to every provider."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None  # sent where the provider supports it; always part of the cache key
    stop: list[str] | None = None


def validate_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise UserInputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserInputError(
                f"message {i} must be {{'role': 'system'|'user'|'assistant', 'content': str}}, got {m!r:.200}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is a lower bound."""
    delay = random.uniform(0, min(cap, base * (2**attempt))) if base > 0 else 0.0
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), max(cap, 1.0) * 4))
    return delay


def parse_retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return float(value) / 1000.0
        value = headers.get("retry-after")
        if value is not None:
            return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
    return None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The first JSON value in ``text`` (tolerates code fences and prose around it)."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON value found in the reply")


def check_schema(data: Any, schema: dict) -> None:
    """Raise ValueError with a readable message when ``data`` does not satisfy ``schema``."""
    import jsonschema

    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"reply does not match the JSON schema at {where}: {exc.message}") from None


# The JSON schema a structured call (complete_json / acomplete_json) must satisfy, visible to the
# provider hooks of the same call (asyncio.to_thread copies the context): providers that can constrain
# decoding to a schema (llama.cpp grammars, ``ChatModel.constrains_json``) use it.
JSON_SCHEMA: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "workbench_json_schema", default=None
)


def json_instruction(schema: dict) -> str:
    return (
        "Reply with a single JSON value and nothing else (no prose, no code fences). "
        "It must satisfy this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)
    )


class Stream:
    """Iterate to get text pieces; afterwards ``.completion`` is the full Completion."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[str], Completion]):
        self._pieces = pieces
        self._finish = finish
        self._parts: list[str] = []
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if piece:
                self._parts.append(piece)
                yield piece
        self.completion = self._finish("".join(self._parts))

    @property
    def text(self) -> str:
        return "".join(self._parts)


class ChatModel:
    """A chat model named ``provider/model``. Subclasses implement the provider hooks."""

    provider: str = "?"
    options_class: type[BaseModel] = BaseOptions
    params_class: type[CallParams] = CallParams
    # True where the provider constrains decoding to the JSON schema of a structured call (JSON_SCHEMA).
    constrains_json: bool = False
    # The price file costing this model's calls (None: the bundled table); set by get_model().
    prices_file: str | Path | None = None

    def __init__(self, model: str, **options: Any):
        self.model = model
        self.name = f"{self.provider}/{model}"
        try:
            self.options = self.options_class(**options)
        except ValidationError as exc:
            raise UserInputError(
                _pydantic_message(f"options for {self.name}", exc, self.options_class)
            ) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------ public interface
    def check_params(self, params: dict) -> dict:
        try:
            p = self.params_class(**params)
        except ValidationError as exc:
            raise UserInputError(
                _pydantic_message(f"parameters for {self.name}", exc, self.params_class)
            ) from None
        return p.model_dump(exclude_none=True)

    async def aclose(self) -> None:
        """Release what async calls opened on the running event loop (HTTP sessions)."""

    def public_options(self) -> dict:
        """Options safe to record (never a key)."""
        from pydantic import SecretStr

        return {
            k: v
            for k, v in self.options.model_dump(mode="python").items()
            if k not in SECRET_OPTIONS and not isinstance(v, SecretStr)
        }

    def complete(self, messages: list[dict], **params: Any) -> Completion:
        return self._complete_checked(validate_messages(messages), self.check_params(params))

    def _complete_checked(self, msgs: list[dict], p: dict) -> Completion:
        """``complete`` for messages and parameters that have been validated already."""
        t0 = time.perf_counter()
        attempt = 0
        while True:
            try:
                c = self._call(msgs, p)
                break
            except LLMError as exc:
                if not exc.retryable or attempt >= self._max_retries():
                    raise self._final(exc, attempt) from None
                time.sleep(self._delay(attempt, exc))
                attempt += 1
        return self._finalise(c, t0, attempt)

    async def acomplete(self, messages: list[dict], **params: Any) -> Completion:
        return await self._acomplete_checked(validate_messages(messages), self.check_params(params))

    async def _acomplete_checked(self, msgs: list[dict], p: dict) -> Completion:
        """``acomplete`` for messages and parameters that have been validated already."""
        t0 = time.perf_counter()
        attempt = 0
        while True:
            try:
                c = await self._acall(msgs, p)
                break
            except LLMError as exc:
                if not exc.retryable or attempt >= self._max_retries():
                    raise self._final(exc, attempt) from None
                await asyncio.sleep(self._delay(attempt, exc))
                attempt += 1
        return self._finalise(c, t0, attempt)

    def stream(self, messages: list[dict], **params: Any) -> Stream:
        msgs, p = validate_messages(messages), self.check_params(params)
        t0 = time.perf_counter()
        holder: dict = {}

        def pieces() -> Iterator[str]:
            # Retries only before the first piece arrives: a half-shown reply cannot be taken back.
            attempt = 0
            while True:
                started = False
                try:
                    for piece in self._stream_pieces(msgs, p, holder):
                        started = True
                        yield piece
                    holder["attempts"] = attempt
                    return
                except LLMError as exc:
                    if started or not exc.retryable or attempt >= self._max_retries():
                        raise self._final(exc, attempt) from None
                    time.sleep(self._delay(attempt, exc))
                    attempt += 1
                    holder.clear()

        def finish(text: str) -> Completion:
            usage = holder.get("usage") or Usage(_estimate_tokens(msgs), max(1, len(text) // 4))
            c = Completion(
                text=text,
                model=self.name,
                usage=usage,
                raw=holder.get("raw"),
                finish_reason=holder.get("finish_reason"),
            )
            return self._finalise(c, t0, holder.get("attempts", 0))

        return Stream(pieces(), finish)

    def complete_json(
        self, messages: list[dict], schema: dict, json_retries: int = 1, **params: Any
    ) -> Completion:
        msgs = _with_json_instruction(validate_messages(messages), schema)
        with _json_schema(schema):
            for _attempt in range(json_retries + 1):
                c = self.complete(msgs, **params)
                err = _parse_into(c, schema)
                if err is None:
                    return c
                msgs = _corrected(msgs, c, err, schema)
        raise self._json_failure(json_retries, err)

    async def acomplete_json(
        self, messages: list[dict], schema: dict, json_retries: int = 1, **params: Any
    ) -> Completion:
        msgs = _with_json_instruction(validate_messages(messages), schema)
        with _json_schema(schema):
            for _attempt in range(json_retries + 1):
                c = await self.acomplete(msgs, **params)
                err = _parse_into(c, schema)
                if err is None:
                    return c
                msgs = _corrected(msgs, c, err, schema)
        raise self._json_failure(json_retries, err)

    def _json_failure(self, json_retries: int, err: str | None) -> LLMError:
        return LLMError(
            f"{self.name} did not return JSON matching the schema after {json_retries + 1} tries: "
            f"{err}. Try a stronger model or a lower temperature."
        )

    # ------------------------------------------------------------------ provider hooks
    def _call(self, messages: list[dict], params: dict) -> Completion:
        raise NotImplementedError

    async def _acall(self, messages: list[dict], params: dict) -> Completion:
        return await asyncio.to_thread(self._call, messages, params)

    def _stream_pieces(self, messages: list[dict], params: dict, holder: dict) -> Iterator[str]:
        c = self._call(messages, params)
        holder.update(usage=c.usage, raw=c.raw, finish_reason=c.finish_reason)
        yield c.text

    # ------------------------------------------------------------------ helpers
    def _max_retries(self) -> int:
        return int(getattr(self.options, "max_retries", 0))

    def _delay(self, attempt: int, exc: LLMError) -> float:
        return backoff_delay(
            attempt,
            getattr(self.options, "backoff_base", 0.5),
            getattr(self.options, "backoff_max", 30.0),
            exc.retry_after,
        )

    def _final(self, exc: LLMError, attempt: int) -> LLMError:
        if exc.retryable:
            return LLMError(
                f"{self.name} failed after {attempt + 1} attempt{'s' if attempt else ''}: {str(exc).rstrip('.')}. "
                "Check the provider's status and your rate limits, or raise max_retries/timeout.",
                status=exc.status,
            )
        return exc

    def _finalise(self, c: Completion, t0: float, attempts: int) -> Completion:
        from workbench.llm.prices import cost_of

        c.latency_ms = (time.perf_counter() - t0) * 1000.0
        c.attempts = attempts + 1
        c.model = self.name
        if c.cost_usd is None:
            c.cost_usd = cost_of(
                self.name, c.usage.prompt_tokens, c.usage.completion_tokens, self.prices_file
            )
        return c


def _estimate_tokens(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages) // 4 + 1


@contextlib.contextmanager
def _json_schema(schema: dict) -> Iterator[None]:
    """Expose ``schema`` as JSON_SCHEMA to the provider hooks of the calls made inside."""
    token = JSON_SCHEMA.set(schema)
    try:
        yield
    finally:
        JSON_SCHEMA.reset(token)


def _corrected(msgs: list[dict], c: Completion, err: str, schema: dict) -> list[dict]:
    """The conversation so far plus the invalid reply and the correction asked for."""
    return msgs + [
        {"role": "assistant", "content": c.text},
        {"role": "user", "content": f"That was not valid: {err}. " + json_instruction(schema)},
    ]


def _with_json_instruction(messages: list[dict], schema: dict) -> list[dict]:
    instr = json_instruction(schema)
    if messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + instr}] + messages[1:]
    return [{"role": "system", "content": instr}] + messages


def _parse_into(c: Completion, schema: dict) -> str | None:
    try:
        data = extract_json(c.text)
        check_schema(data, schema)
    except ValueError as exc:
        return str(exc)
    c.data = data
    return None


def _pydantic_message(what: str, exc: ValidationError, cls: type[BaseModel]) -> str:
    problems = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown option {loc!r}")
        else:
            problems.append(f"{loc}: {e['msg']}")
    known = ", ".join(sorted(cls.model_fields))
    return f"invalid {what}: {'; '.join(problems)} (known: {known})"
