"""What a failed connection is reported as, through the real openai SDK on both transports."""

from __future__ import annotations

import asyncio
import socket

import pytest

from workbench.llm import get_model
from workbench.llm.base import LLMError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_refused_connection_is_not_reported_as_a_timeout(transport):
    # The aiohttp transport wraps a refused connection as APITimeoutError: "timed out after 60.0s"
    # 0.03 s after the start (issue 15, item 10).
    model = get_model(
        f"openai/m-{transport}",
        base_url=f"http://127.0.0.1:{_closed_port()}/v1",
        api_key="sk-test",
        max_retries=0,
        http_transport=transport,
    )

    async def call():
        try:
            await model.acomplete([{"role": "user", "content": "hi"}])
        finally:
            await model.aclose()

    with pytest.raises(LLMError) as err:
        asyncio.run(call())
    assert "connection refused" in str(err.value) and "timed out" not in str(err.value)
    with pytest.raises(LLMError) as err:
        model.complete([{"role": "user", "content": "hi"}])
    assert "connection refused" in str(err.value)
