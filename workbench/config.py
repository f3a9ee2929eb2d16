"""Shell helpers over the settings: how the default model is chosen, and the public address.

The settings themselves (read from the environment) are ``db.settings.Settings``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from db.settings import ENV_PUBLIC_URL  # noqa: F401  (re-exported)

DEFAULT_PUBLIC_URL = "http://localhost:8501"


# How Settings.default_model is chosen, for command help texts.
DEFAULT_MODEL_HELP = (
    "WORKBENCH_DEFAULT_MODEL; else openai/gpt-4o-mini when OPENAI_API_KEY is set, "
    "anthropic/claude-3-5-haiku-latest when ANTHROPIC_API_KEY is set, else the offline "
    "local/smollm2"
)


def public_url(seen_in_browser: str | None = None, *, configured: str | None = None) -> str:
    """The address participants reach the app at, for invite and Prolific links: ``configured``
    (``Settings.public_url``, from ``WORKBENCH_PUBLIC_URL``) when set, else the origin the
    researcher's browser shows (in the app), else ``http://localhost:8501``."""
    configured = (configured or "").strip()
    if configured:
        return configured.rstrip("/")
    if seen_in_browser:
        parts = urlsplit(seen_in_browser)
        if parts.scheme in ("http", "https") and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return DEFAULT_PUBLIC_URL
