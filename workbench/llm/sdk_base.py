"""What the hosted-API providers share: credentials from options or the environment, and SDK
clients created once (the async one once per event loop)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from workbench.errors import UserInputError
from workbench.llm.base import ChatModel

# Local servers (vLLM, Ollama, llama.cpp server) accept any key; the SDKs insist on one.
PLACEHOLDER_KEY = "not-needed"


class SDKChatModel(ChatModel):
    """A ChatModel over a vendor SDK. Subclasses set the environment variable names and build clients."""

    key_env: str = ""
    base_url_env: str = ""
    server_hint: str = "a compatible server"

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self._base_url = o.base_url or os.environ.get(self.base_url_env) or None
        key = o.api_key.get_secret_value() if o.api_key else os.environ.get(self.key_env)
        if not key:
            if not self._base_url:
                raise UserInputError(
                    f"{self.name} needs an API key: set {self.key_env} (or {self.base_url_env} for "
                    f"{self.server_hint}), or use local/smollm2 to try the pipeline offline")
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

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _make_aclient(self) -> Any:
        raise NotImplementedError

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
