"""Configuration read from the environment.

Every setting has an embedded default so the workbench runs with no configuration at all:
an SQLite file under the data directory and, with no API key, the offline local model.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "WORKBENCH_DATA_DIR"
ENV_DB_URL = "WORKBENCH_DB_URL"
ENV_PUBLIC_URL = "WORKBENCH_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://localhost:8501"
DEFAULT_DATA_DIR = Path("data")


def data_dir() -> Path:
    """The directory holding the default SQLite database, caches and run outputs."""
    path = Path(os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from workbench.errors import UserInputError

        raise UserInputError(
            f"cannot create the data directory {path} ({exc.strerror or exc}): set "
            f"{ENV_DATA_DIR} to a directory you can write to"
        ) from None
    return path


def db_url() -> str:
    """`WORKBENCH_DB_URL` if set, else `sqlite:///<data dir>/workbench.db`."""
    url = os.environ.get(ENV_DB_URL)
    if url:
        return url
    return f"sqlite:///{(data_dir() / 'workbench.db').resolve()}"


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
