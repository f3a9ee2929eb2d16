"""LLM backends behind one interface.

    from workbench.llm import get_model, recorded
    model = get_model("openai/gpt-4o-mini", timeout=30)
    c = model.complete([{"role": "user", "content": "Hi"}], temperature=0.7, seed=1)
    c.text, c.usage.prompt_tokens, c.latency_ms, c.cost_usd

Providers: openai/<model>, anthropic/<model>, local/smollm2, local/<path.gguf>, scripted/<name>.
"""

from workbench.llm.base import ChatModel, Completion, LLMError, Stream, Usage
from workbench.llm.recording import RecordedModel, recorded
from workbench.llm.registry import PROVIDERS, check_model_name, get_model
from workbench.llm.scripted import ScriptedModel

__all__ = [
    "ChatModel",
    "Completion",
    "LLMError",
    "PROVIDERS",
    "RecordedModel",
    "ScriptedModel",
    "Stream",
    "Usage",
    "check_model_name",
    "get_model",
    "recorded",
]
