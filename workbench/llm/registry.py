"""``get_model("provider/model", **options)``: the one way to get a ChatModel by name.

SDKs are imported only when their provider is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from db.errors import MissingKeyError, UserInputError
from workbench.llm.base import ChatModel


def _openai(model: str, **o: Any) -> ChatModel:
    from workbench.llm.openai_provider import OpenAIChatModel

    return OpenAIChatModel(model, **o)


def _anthropic(model: str, **o: Any) -> ChatModel:
    from workbench.llm.anthropic_provider import AnthropicChatModel

    return AnthropicChatModel(model, **o)


def _local(model: str, **o: Any) -> ChatModel:
    from workbench.llm.local_provider import LocalChatModel

    return LocalChatModel(model, **o)


def _scripted(model: str, **o: Any) -> ChatModel:
    from workbench.llm.scripted import ScriptedModel

    return ScriptedModel(name=f"scripted/{model}", **o)


PROVIDERS: dict[str, Callable[..., ChatModel]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "local": _local,
    "scripted": _scripted,
}


MODEL_NAME = re.compile(r"^[a-z][a-z0-9_\-]*/\S.*$")


def parse_model_name(name: str, what: str = "the model") -> tuple[str, str]:
    """``(provider, model)`` of a ``provider/model`` name, or a UserInputError naming ``what``: the
    one check of model names (studies, simulation specs, labellers and get_model use it)."""
    name = name.strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise UserInputError(
            f"{what} is a provider/model name (e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, "
            f"local/smollm2 or scripted/test), got {name!r}; providers: {', '.join(PROVIDERS)}"
        )
    provider, model = name.split("/", 1)
    return provider, model


def get_model(name: str, *, prices_file: str | Path | None = None, **options: Any) -> ChatModel:
    """A ChatModel for ``provider/model`` (e.g. ``openai/gpt-4o-mini``, ``local/smollm2``); its calls
    are costed with ``prices_file`` over the bundled price table (``Settings.prices_file``)."""
    provider, model = parse_model_name(name)
    if provider not in PROVIDERS:
        raise UserInputError(
            f"unknown model provider {provider!r} in {name!r}; known providers: {', '.join(PROVIDERS)}"
        )
    chat = PROVIDERS[provider](model, **options)
    if prices_file:
        chat.prices_file = prices_file
    return chat


def check_model_name(name: str) -> str | None:
    """Refuse a model the workbench cannot run at all (unknown provider, no such local model file,
    a missing package); return a warning, not an error, when only its API key is missing here (the
    key may be set where the app runs). Nothing is called and nothing loads."""
    try:
        get_model(name)
    except MissingKeyError as exc:
        return str(exc)
    return None
