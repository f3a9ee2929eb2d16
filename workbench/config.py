"""Shell settings read from the environment: the default model and the public address.

The database settings live in ``db.settings``. With no API key the default model is the offline
local model.
"""

from __future__ import annotations

import os

ENV_PUBLIC_URL = "WORKBENCH_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://localhost:8501"


# How default_model() chooses, for command help texts.
DEFAULT_MODEL_HELP = (
    "WORKBENCH_DEFAULT_MODEL; else openai/gpt-4o-mini when OPENAI_API_KEY is set, "
    "anthropic/claude-3-5-haiku-latest when ANTHROPIC_API_KEY is set, else the offline "
    "local/smollm2"
)


def default_model() -> str:
    """The model used when a command is given none: a hosted model when its key is set,
    otherwise the offline SmolLM2 model (for trying the pipeline, not for studies)."""
    if os.environ.get("WORKBENCH_DEFAULT_MODEL"):
        return os.environ["WORKBENCH_DEFAULT_MODEL"]
    if os.environ.get("OPENAI_API_KEY"):
        return "openai/gpt-4o-mini"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic/claude-3-5-haiku-latest"
    return "local/smollm2"


def public_url(seen_in_browser: str | None = None) -> str:
    """The address participants reach the app at, for invite and Prolific links:
    ``WORKBENCH_PUBLIC_URL`` when set, else the origin the researcher's browser shows (in the app),
    else ``http://localhost:8501``."""
    configured = (os.environ.get(ENV_PUBLIC_URL) or "").strip()
    if configured:
        return configured.rstrip("/")
    if seen_in_browser:
        from urllib.parse import urlsplit

        parts = urlsplit(seen_in_browser)
        if parts.scheme in ("http", "https") and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return DEFAULT_PUBLIC_URL
