"""``openai/<model>``: the openai SDK; any OpenAI-compatible server through OPENAI_BASE_URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import SecretStr

from db.errors import UserInputError
from workbench.llm.base import BaseOptions, CallParams, Completion, LLMError, Usage
from workbench.llm.sdk_base import SDKChatModel

CHAT_PATH = "/chat/completions"


class OpenAIOptions(BaseOptions):
    api_key: SecretStr | None = None  # default: OPENAI_API_KEY; never recorded
    base_url: str | None = None  # default: OPENAI_BASE_URL
    organization: str | None = None
    max_tokens_field: str = "max_tokens"  # some models want "max_completion_tokens"
    # Async HTTP transport: "auto" uses aiohttp when it is installed (openai[aiohttp]; about half
    # the CPU per call of the default httpx transport), else httpx.
    http_transport: Literal["auto", "httpx", "aiohttp"] = "auto"


class OpenAIParams(CallParams):
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


def _sdk():
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a core dependency
        raise UserInputError("the openai SDK is not installed: pip install openai") from None
    return openai


class OpenAIChatModel(SDKChatModel):
    provider = "openai"
    options_class = OpenAIOptions
    params_class = OpenAIParams

    key_env = "OPENAI_API_KEY"
    api_name = "the OpenAI API"
    base_url_env = "OPENAI_BASE_URL"
    server_hint = "a local OpenAI-compatible server"

    def __init__(self, model: str, **options: Any):
        self._sdk = _sdk()
        from openai.types import chat as types

        self._types = types
        super().__init__(model, **options)

    def _client_kwargs(self) -> dict:
        return {**super()._client_kwargs(), "organization": self.options.organization}

    def _make_client(self):
        return self._sdk.OpenAI(**self._client_kwargs())

    def _make_aclient(self):
        kw = self._client_kwargs()
        if self._use_aiohttp():
            kw["http_client"] = self._sdk.DefaultAioHttpClient(timeout=self.options.timeout)
        return self._sdk.AsyncOpenAI(**kw)

    def _use_aiohttp(self) -> bool:
        mode = self.options.http_transport
        if mode == "httpx":
            return False
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            if mode == "aiohttp":
                raise UserInputError(
                    "http_transport='aiohttp' needs aiohttp: pip install 'openai[aiohttp]'"
                ) from None
            return False
        return True

    def _request(self, messages: list[dict], params: dict) -> dict:
        req: dict = {"model": self.model, "messages": messages}
        for k, v in params.items():
            req[self.options.max_tokens_field if k == "max_tokens" else k] = v
        return req

    def _to_completion(self, resp: Any) -> Completion:
        """A Completion from the response's JSON (``post`` with ``cast_to=object`` returns it as a dict:
        building the SDK's pydantic objects cost a quarter of a call's CPU, and nothing reads them)."""
        try:
            choice = resp["choices"][0]
            text = choice["message"]["content"] or ""
            u = resp.get("usage")
            usage = (
                Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                if u
                else Usage()
            )
            # A compact raw record: the whole response costs more to store than the rest of the call.
            raw = {
                "id": resp.get("id"),
                "model": resp.get("model"),
                "finish_reason": choice.get("finish_reason"),
                "system_fingerprint": resp.get("system_fingerprint"),
                "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
            }
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise LLMError(f"{self.name} returned a malformed response ({exc})", retryable=True) from None
        return Completion(
            text=text,
            model=self.name,
            usage=usage,
            raw=raw,
            finish_reason=raw["finish_reason"],
            response=resp,
        )

    # Requests go through the client's plain ``post``: ``chat.completions.create`` first walks the
    # whole message list against the SDK's TypedDict annotations, which for our plain string
    # messages changes nothing and costs more CPU than the rest of the call together.
    def _call(self, messages: list[dict], params: dict) -> Completion:
        try:
            resp = self.client().post(CHAT_PATH, cast_to=object, body=self._request(messages, params))
        except Exception as exc:
            raise self._translate(exc) from None
        return self._to_completion(resp)

    async def _acall(self, messages: list[dict], params: dict) -> Completion:
        try:
            resp = await self.aclient().post(CHAT_PATH, cast_to=object, body=self._request(messages, params))
        except Exception as exc:
            raise self._translate(exc) from None
        return self._to_completion(resp)

    def _stream_pieces(self, messages: list[dict], params: dict, holder: dict) -> Iterator[str]:
        req = self._request(messages, params)
        req.update(stream=True, stream_options={"include_usage": True})
        try:
            t = self._types
            for chunk in self.client().post(
                CHAT_PATH,
                cast_to=t.ChatCompletion,
                body=req,
                stream=True,
                stream_cls=self._sdk.Stream[t.ChatCompletionChunk],
            ):
                if getattr(chunk, "usage", None):
                    holder["usage"] = Usage(
                        int(chunk.usage.prompt_tokens or 0), int(chunk.usage.completion_tokens or 0)
                    )
                for choice in chunk.choices or []:
                    if choice.finish_reason:
                        holder["finish_reason"] = choice.finish_reason
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except LLMError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None
