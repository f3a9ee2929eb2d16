"""What the hosted-API providers share: credentials from options or the environment, and SDK
clients created once (the async one once per event loop)."""

from __future__ import annotations

import asyncio
import os
import socket
from abc import ABC, abstractmethod
from typing import Any

from db.errors import MissingKeyError
from workbench.llm.base import ChatModel, LLMError, parse_retry_after

# Local servers (vLLM, Ollama, llama.cpp server) accept any key; the SDKs insist on one.
PLACEHOLDER_KEY = "not-needed"


def _short(exc: Exception, n: int = 300) -> str:
    s = str(exc)
    return s if len(s) <= n else s[:n] + "..."


def _connection_failure(exc: BaseException) -> str | None:
    """What went wrong when the cause chain of ``exc`` holds an operating-system connection error
    (refused, reset, no route, unknown host), else None. The aiohttp transport of the openai SDK
    wraps a refused connection as ``APITimeoutError``: reporting "timed out after 60s" 0.03 s after
    the start sent people looking for a slow server instead of a missing one."""
    seen, found = set(), None
    while exc is not None and id(exc) not in seen:  # the innermost OS error says the most
        seen.add(id(exc))
        if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
            found = exc
        exc = exc.__cause__ or exc.__context__
    if found is None:
        return None
    for kind, words in _CONNECTION_WORDS:
        if isinstance(found, kind):
            return words
    return found.strerror or f"{found.__class__.__name__}: {found}"


_CONNECTION_WORDS = (
    (ConnectionRefusedError, "connection refused (is the server running, and on this port?)"),
    (ConnectionResetError, "connection reset by the server"),
    (socket.gaierror, "unknown host name"),
)


class SDKChatModel(ChatModel, ABC):
    """A ChatModel over a vendor SDK (openai, anthropic: both raise the same exception families).
    Subclasses set the environment variable names and build clients."""

    key_env: str = ""
    base_url_env: str = ""
    server_hint: str = "a compatible server"
    api_name: str = "the API"  # for "cannot reach ..." messages
    retry_statuses: tuple[int, ...] = (408, 409, 429)  # retried besides every 5xx

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self._base_url = o.base_url or os.environ.get(self.base_url_env) or None
        key = o.api_key.get_secret_value() if o.api_key else os.environ.get(self.key_env)
        if not key:
            if not self._base_url:
                raise MissingKeyError(
                    f"{self.name} needs an API key: set {self.key_env} (or {self.base_url_env} for "
                    f"{self.server_hint}), or use local/smollm2 to try the pipeline offline"
                )
            key = PLACEHOLDER_KEY
        self._key = key  # kept in memory only: never in public_options, records or logs
        self._client = None
        self._aclient = None
        self._aloop = None

    def public_options(self) -> dict:
        d = super().public_options()
        d["base_url"] = self._base_url
        return d

    def _client_kwargs(self) -> dict:
        # max_retries=0: our own retries are the ones that are recorded and tuned.
        return dict(api_key=self._key, base_url=self._base_url, timeout=self.options.timeout, max_retries=0)

    @abstractmethod
    def _make_client(self) -> Any:
        """The SDK's synchronous client, built from ``_client_kwargs()``."""

    @abstractmethod
    def _make_aclient(self) -> Any:
        """The SDK's asynchronous client for the running event loop."""

    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient = self._make_aclient()
            self._aloop = loop
        return self._aclient

    async def aclose(self) -> None:
        client, self._aclient, self._aloop = self._aclient, None, None
        if client is not None:
            await client.close()

    def _translate(self, exc: Exception) -> LLMError:
        """An SDK exception as an LLMError saying whether to retry and what to check."""
        sdk = self._sdk
        refused = _connection_failure(exc)
        if refused is not None:  # some transports report a refused connection as a timeout
            return LLMError(f"cannot reach {self._base_url or self.api_name}: {refused}", retryable=True)
        if isinstance(exc, sdk.APITimeoutError):
            return LLMError(f"{self.name} timed out after {self.options.timeout}s", retryable=True)
        if isinstance(exc, sdk.APIConnectionError):
            return LLMError(f"cannot reach {self._base_url or self.api_name}: {exc}", retryable=True)
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            retry_after = parse_retry_after(getattr(exc.response, "headers", None))
            msg = f"{self.name} returned HTTP {status}: {_short(exc)}"
            if status in (401, 403):
                msg += f" (check {self.key_env})"
            elif status == 404:
                msg += f" (check the model name and {self.base_url_env})"
            return LLMError(
                msg,
                retryable=status in self.retry_statuses or status >= 500,
                retry_after=retry_after,
                status=status,
            )
        if isinstance(exc, (sdk.APIResponseValidationError, ValueError)):
            return LLMError(f"{self.name} returned a malformed response: {_short(exc)}", retryable=True)
        return LLMError(f"{self.name} call failed: {exc.__class__.__name__}: {_short(exc)}", retryable=False)
