"""``anthropic/<model>``: the anthropic SDK (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import SecretStr

from db.errors import UserInputError
from workbench.llm.base import BaseOptions, CallParams, Completion, LLMError, Usage
from workbench.llm.sdk_base import SDKChatModel


class AnthropicOptions(BaseOptions):
    api_key: SecretStr | None = None  # default: ANTHROPIC_API_KEY; never recorded
    base_url: str | None = None  # default: ANTHROPIC_BASE_URL
    default_max_tokens: int = 1024  # the messages API requires max_tokens


class AnthropicParams(CallParams):
    top_k: int | None = None


def _sdk():
    try:
        import anthropic
    except ImportError:  # pragma: no cover - anthropic is a core dependency
        raise UserInputError("the anthropic SDK is not installed: pip install anthropic") from None
    return anthropic


def to_anthropic(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """System prompt apart; turns alternate and start with the user, as the messages API requires."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    turns: list[dict] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1] = {"role": m["role"], "content": turns[-1]["content"] + "\n\n" + m["content"]}
        else:
            turns.append(dict(m))
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(start)"})
    return system, turns


class AnthropicChatModel(SDKChatModel):
    provider = "anthropic"
    options_class = AnthropicOptions
    params_class = AnthropicParams

    key_env = "ANTHROPIC_API_KEY"
    api_name = "the Anthropic API"
    retry_statuses = (408, 409, 429, 529)  # 529: Anthropic "overloaded"
    base_url_env = "ANTHROPIC_BASE_URL"

    def __init__(self, model: str, **options: Any):
        self._sdk = _sdk()
        super().__init__(model, **options)

    def _make_client(self):
        return self._sdk.Anthropic(**self._client_kwargs())

    def _make_aclient(self):
        return self._sdk.AsyncAnthropic(**self._client_kwargs())

    def _request(self, messages: list[dict], params: dict) -> dict:
        system, turns = to_anthropic(messages)
        req: dict = {
            "model": self.model,
            "messages": turns,
            "max_tokens": params.get("max_tokens") or self.options.default_max_tokens,
        }
        if system:
            req["system"] = system
        # Sampling parameters go in the body directly: newer SDK releases dropped them from the
        # typed signature, while the messages API still takes them.
        sampling = {k: params[k] for k in ("temperature", "top_p", "top_k") if k in params}
        if sampling:
            req["extra_body"] = sampling
        if params.get("stop"):
            req["stop_sequences"] = params["stop"]
        # "seed" is not part of the messages API: it only keys the response cache.
        return req

    def _to_completion(self, resp: Any) -> Completion:
        try:
            text = "".join(getattr(b, "text", "") for b in resp.content if getattr(b, "type", "") == "text")
            usage = Usage(int(resp.usage.input_tokens or 0), int(resp.usage.output_tokens or 0))
            raw = {
                "id": getattr(resp, "id", None),
                "model": getattr(resp, "model", None),
                "stop_reason": getattr(resp, "stop_reason", None),
                "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
            }
        except (AttributeError, TypeError) as exc:
            raise LLMError(f"{self.name} returned a malformed response ({exc})", retryable=True) from None
        return Completion(
            text=text, model=self.name, usage=usage, raw=raw, finish_reason=resp.stop_reason, response=resp
        )

    def _call(self, messages: list[dict], params: dict) -> Completion:
        try:
            resp = self.client().messages.create(**self._request(messages, params))
        except Exception as exc:
            raise self._translate(exc) from None
        return self._to_completion(resp)

    async def _acall(self, messages: list[dict], params: dict) -> Completion:
        try:
            resp = await self.aclient().messages.create(**self._request(messages, params))
        except Exception as exc:
            raise self._translate(exc) from None
        return self._to_completion(resp)

    def _stream_pieces(self, messages: list[dict], params: dict, holder: dict) -> Iterator[str]:
        req = self._request(messages, params)
        req["stream"] = True
        prompt_tokens = completion_tokens = 0
        try:
            for ev in self.client().messages.create(**req):
                kind = getattr(ev, "type", "")
                if kind == "message_start":
                    prompt_tokens = int(ev.message.usage.input_tokens or 0)
                elif kind == "content_block_delta" and getattr(ev.delta, "type", "") == "text_delta":
                    yield ev.delta.text
                elif kind == "message_delta":
                    completion_tokens = int(getattr(ev.usage, "output_tokens", 0) or 0)
                    holder["finish_reason"] = getattr(ev.delta, "stop_reason", None)
        except LLMError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None
        holder["usage"] = Usage(prompt_tokens, completion_tokens)
