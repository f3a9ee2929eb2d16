"""The fake server itself speaks both APIs well enough for the real SDKs."""

import anthropic
import openai

from workbench.testing.fake_llm_server import FakeLLMServer


def test_openai_sdk_plain_and_stream():
    with FakeLLMServer(responder=lambda r: "hello there, user") as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key="k", max_retries=0)
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "hello there, user"
        assert out.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
        assert text == "hello there, user"


def test_anthropic_sdk_plain_and_stream():
    with FakeLLMServer(responder=lambda r: "bonjour " + r.last_user_text) as srv:
        client = anthropic.Anthropic(base_url=srv.anthropic_base_url, api_key="k", max_retries=0)
        msg = client.messages.create(
            model="m", max_tokens=50, system="sys", messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text == "bonjour hi"
        with client.messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "yo"}]
        ) as s:
            assert "".join(s.text_stream) == "bonjour yo"
        assert srv.requests[0].messages[0] == {"role": "system", "content": "sys"}
