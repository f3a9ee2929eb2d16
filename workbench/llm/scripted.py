"""``scripted/<name>``: replies from a list or a function of the conversation (tests, dry runs)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workbench.llm.base import CallParams, ChatModel, Completion, LLMError, Usage

Reply = str | Exception


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    replies: Any = None  # list of str (or exceptions to raise) or fn(messages) -> str
    latency: float = Field(0.0, ge=0, description="seconds to wait per async call")
    max_retries: int = Field(0, ge=0)
    backoff_base: float = 0.0
    backoff_max: float = 0.0


def echo_responder(messages: list[dict]) -> str:
    n = sum(1 for m in messages if m["role"] == "user")
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"Reply {n} to: {last[:60]}"


class ScriptedModel(ChatModel):
    """A model whose replies are given: a list (served in order) or ``fn(messages) -> str``.

    A list item that is an exception is raised instead of answered (to script failures).
    """

    provider = "scripted"
    options_class = ScriptedOptions
    params_class = CallParams

    def __init__(
        self,
        replies: list[Reply] | Callable[[list[dict]], str] | None = None,
        name: str = "scripted/test",
        **options: Any,
    ):
        model = name.split("/", 1)[1] if name.startswith("scripted/") else name
        super().__init__(model, **options)
        if replies is None:
            replies = self.options.replies
        self._replies = replies if replies is not None else echo_responder
        self._i = 0
        self._lock = threading.Lock()
        self.calls: list[tuple[list[dict], dict]] = []

    def public_options(self) -> dict:
        return {"latency": self.options.latency}

    def _next(self, messages: list[dict], params: dict) -> Completion:
        with self._lock:
            self.calls.append((messages, params))
            if callable(self._replies):
                reply: Reply = self._replies(messages)
            else:
                if self._i >= len(self._replies):
                    raise LLMError(f"{self.name} ran out of scripted replies ({len(self._replies)} given)")
                reply = self._replies[self._i]
                self._i += 1
        if isinstance(reply, Exception):
            raise reply
        text = str(reply)
        prompt = sum(len(m["content"]) for m in messages) // 4 + 1
        return Completion(
            text=text,
            model=self.name,
            usage=Usage(prompt, max(1, len(text) // 4)),
            raw={"scripted": True},
            finish_reason="stop",
            cost_usd=0.0,
        )

    def _call(self, messages: list[dict], params: dict) -> Completion:
        return self._next(messages, params)

    async def _acall(self, messages: list[dict], params: dict) -> Completion:
        if self.options.latency:
            await asyncio.sleep(self.options.latency)
        return self._next(messages, params)
