"""Contract tests: the real openai and anthropic SDKs against the fake HTTP server."""

from __future__ import annotations

import asyncio
import time

import pytest

from db.errors import UserInputError
from db.settings import Settings
from workbench.llm import LLMError, ScriptedModel, get_model
from workbench.testing.fake_llm_server import FakeLLMServer

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
FAST = dict(timeout=1.0, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def srv():
    with FakeLLMServer() as s:
        yield s


def _model(provider: str, srv: FakeLLMServer, **kw):
    if provider == "openai":
        return get_model("openai/gpt-4o-mini", base_url=srv.openai_base_url, **{**FAST, **kw})
    return get_model("anthropic/claude-haiku-4-5", base_url=srv.anthropic_base_url, **{**FAST, **kw})


PROVIDERS = ["openai", "anthropic"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_normalised(provider, srv):
    c = _model(provider, srv).complete(MSGS, temperature=0.3, max_tokens=50, seed=1)
    assert c.text == "Reply 1 to: hello"
    assert c.model.startswith(provider + "/")
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    assert c.latency_ms > 0 and c.raw and c.cost_usd is not None and c.cost_usd > 0
    body = srv.requests[-1].body
    assert body["temperature"] == 0.3
    if provider == "anthropic":
        assert body["system"] == "Be brief." and body["max_tokens"] == 50 and "seed" not in body
    else:
        assert body["messages"][0]["role"] == "system" and body["seed"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming(provider, srv):
    srv.responder = lambda req: "a fairly long streamed reply in pieces"
    s = _model(provider, srv).stream(MSGS)
    pieces = list(s)
    assert len(pieces) > 1 and "".join(pieces) == "a fairly long streamed reply in pieces"
    assert s.completion.text == "".join(pieces) and s.completion.usage.completion_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_async(provider, srv):
    m = _model(provider, srv)

    async def go():
        return await asyncio.gather(*(m.acomplete([{"role": "user", "content": f"q{i}"}]) for i in range(4)))

    out = asyncio.run(go())
    assert [c.text for c in out] == [f"Reply 1 to: q{i}" for i in range(4)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_honours_retry_after(provider, srv):
    srv.push_fault(status=429, retry_after=0.6)
    t0 = time.perf_counter()
    c = _model(provider, srv).complete(MSGS)
    assert time.perf_counter() - t0 >= 0.55  # waited for Retry-After, not just the tiny backoff
    assert c.attempts == 2 and c.text == "Reply 1 to: hello"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_retried_then_clear_failure(provider, srv):
    srv.push_fault(status=500)
    assert _model(provider, srv).complete(MSGS).attempts == 2
    for _ in range(3):
        srv.push_fault(status=503)
    with pytest.raises(LLMError, match="failed after 3 attempts.*503"):
        _model(provider, srv, max_retries=2).complete(MSGS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_retried(provider, srv):
    srv.push_fault(delay=2.0)
    c = _model(provider, srv, timeout=0.4).complete(MSGS)
    assert c.attempts == 2
    srv.push_fault(delay=2.0)
    with pytest.raises(LLMError, match="timed out"):
        _model(provider, srv, timeout=0.4, max_retries=0).complete(MSGS)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_body(provider, srv):
    srv.push_fault(malformed=True)
    with pytest.raises(LLMError, match="malformed"):
        _model(provider, srv, max_retries=0).complete(MSGS)
    srv.push_fault(malformed=True)
    assert _model(provider, srv).complete(MSGS).attempts == 2


def test_openai_completion_read_from_the_json_body(srv):
    """The OpenAI provider reads the reply's JSON itself (no SDK objects): an empty content is "",
    a missing usage counts 0, and a body without choices, message or content is malformed."""
    model = _model("openai", srv)
    ok = {"id": "c1", "model": "m", "choices": [{"message": {"content": None}, "finish_reason": "stop"}]}
    c = model._to_completion(ok)
    assert c.text == "" and c.usage.prompt_tokens == 0 and c.finish_reason == "stop" and c.raw["id"] == "c1"
    for bad in ({"choices": []}, {"choices": [{}]}, {"choices": [{"message": {}}]}, "not json", None):
        with pytest.raises(LLMError, match="malformed"):
            model._to_completion(bad)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_client_error_not_retried(provider, srv):
    srv.push_fault(status=401)
    with pytest.raises(LLMError, match="401.*API_KEY"):
        _model(provider, srv).complete(MSGS)
    assert len(srv.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_complete_json(provider, srv):
    schema = {
        "type": "object",
        "properties": {"message": {"type": "string"}, "end": {"type": "boolean"}},
        "required": ["message", "end"],
    }
    replies = iter(['{"message": "hi"}', 'Sure! ```json\n{"message": "hi", "end": false}\n```'])
    srv.responder = lambda req: next(replies)
    c = _model(provider, srv).complete_json(MSGS, schema)
    assert c.data == {"message": "hi", "end": False}
    assert "JSON schema" in srv.requests[0].messages[0]["content"]


def test_unknown_option_param_provider():
    with pytest.raises(UserInputError, match="unknown option 'temprature'"):
        get_model("openai/gpt-4o", base_url="http://127.0.0.1:9/v1", temprature=1)
    with pytest.raises(UserInputError, match="known providers: openai, anthropic, local, scripted"):
        get_model("mistral/large")
    with pytest.raises(UserInputError, match="provider/model"):
        get_model("gpt-4o")
    m = ScriptedModel(["x"])
    with pytest.raises(UserInputError, match="unknown option 'foo'"):
        m.complete(MSGS, foo=1)
    with pytest.raises(UserInputError, match="message 0"):
        m.complete([{"role": "robot", "content": "x"}])


def test_missing_key_messages(monkeypatch):
    with pytest.raises(UserInputError, match="OPENAI_API_KEY"):
        get_model("openai/gpt-4o")
    with pytest.raises(UserInputError, match="ANTHROPIC_API_KEY"):
        get_model("anthropic/claude-haiku-4-5")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert get_model("openai/llama3").name == "openai/llama3"  # local server: placeholder key


def test_env_key_and_base_url(monkeypatch, srv):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
    get_model("openai/gpt-4o-mini", **FAST).complete(MSGS)
    assert srv.requests[-1].headers["authorization"] == "Bearer sk-secret-123"


def test_scripted_model():
    m = ScriptedModel(["one", RuntimeError("boom"), "three"])
    assert m.complete(MSGS).text == "one"
    with pytest.raises(RuntimeError):
        m.complete(MSGS)
    assert asyncio.run(m.acomplete(MSGS)).text == "three"
    with pytest.raises(LLMError, match="ran out"):
        m.complete(MSGS)
    f = ScriptedModel(lambda msgs: f"n={len(msgs)}", name="scripted/fn")
    assert f.complete(MSGS).text == "n=2" and f.name == "scripted/fn"
    assert get_model("scripted/echo").complete(MSGS).text == "Reply 1 to: hello"


def test_prices_override(tmp_path, monkeypatch):
    from workbench.llm.prices import cost_of

    assert cost_of("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert cost_of("openai/unknown-model", 10, 10) is None
    assert cost_of("local/smollm2", 10, 10) == 0
    p = tmp_path / "prices.yaml"
    p.write_text("models:\n  openai/unknown-model: {input: 1, output: 2}\n")
    monkeypatch.setenv("WORKBENCH_PRICES", str(p))
    prices = Settings.from_env().prices_file
    assert cost_of("openai/unknown-model", 1_000_000, 1_000_000, prices) == pytest.approx(3.0)
    assert cost_of("openai/unknown-model", 1_000_000, 1_000_000) is None  # the argument, not a global
    p2 = tmp_path / "bad.yaml"
    p2.write_text("models:\n  x/y: {input: 1}\n")
    with pytest.raises(UserInputError, match="needs 'input' and 'output'"):
        cost_of("x/y", 1, 1, p2)


def test_local_missing_extra_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "llama_cpp":
            raise ImportError("no llama_cpp")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(
        "workbench.llm.local_provider.smollm2_path", lambda: __import__("pathlib").Path("x.gguf")
    )
    with pytest.raises(UserInputError, match=r"pip install 'llm-user-workbench\[local\]'"):
        get_model("local/smollm2")


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_openai_async_transports_faults(transport, srv):
    """The async path on both HTTP transports: success, 429 + Retry-After, 500, malformed, timeout."""
    pytest.importorskip("aiohttp") if transport == "aiohttp" else None
    m = _model("openai", srv, http_transport=transport, max_retries=3)

    async def go():
        ok = await m.acomplete(MSGS, seed=2)
        srv.push_fault(status=429, retry_after=0.2)
        srv.push_fault(status=500)
        srv.push_fault(malformed=True)
        t0 = time.perf_counter()
        retried = await m.acomplete(MSGS)
        waited = time.perf_counter() - t0
        srv.push_fault(delay=3)
        with pytest.raises(LLMError, match="timed out"):
            await _model("openai", srv, http_transport=transport, max_retries=0).acomplete(MSGS)
        return ok, retried, waited

    ok, retried, waited = asyncio.run(go())
    assert ok.text == "Reply 1 to: hello" and ok.usage.prompt_tokens > 0 and srv.requests[0].body["seed"] == 2
    assert retried.text == "Reply 1 to: hello" and retried.attempts == 4 and waited >= 0.2
