"""The workbench's settings: one frozen ``Settings`` object, read from the environment by the shells.

``Settings.from_env()`` is the only place that reads the ``WORKBENCH_*`` variables (the SDK adapters
still read their API keys and ``*_BASE_URL``, the SDKs' own convention). The CLI builds it once per
command, the app once per page run, and both pass the values down as arguments: the core never
looks at the environment, so tests build ``Settings(...)`` directly or pass plain values.

Every setting has an embedded default so the workbench runs with no configuration at all: an SQLite
file under the data folder, the bundled codebook, scenario packs and price table, the response
cache on, 12-hour staff logins and the offline local model.

Example::

    settings = Settings.from_env()
    engine = ready_engine(settings.db_url)
    codebook = load_codebook(extensions=settings.codebook_extensions)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from db.errors import UserInputError

ENV_DATA_DIR = "WORKBENCH_DATA_DIR"
ENV_DB_URL = "WORKBENCH_DB_URL"
ENV_CODEBOOK = "WORKBENCH_CODEBOOK"
ENV_SCENARIO_DIRS = "WORKBENCH_SCENARIO_DIRS"
ENV_PRICES = "WORKBENCH_PRICES"
ENV_LLM_CACHE = "WORKBENCH_LLM_CACHE"
ENV_SESSION_HOURS = "WORKBENCH_STAFF_SESSION_HOURS"
ENV_DEFAULT_MODEL = "WORKBENCH_DEFAULT_MODEL"
ENV_PUBLIC_URL = "WORKBENCH_PUBLIC_URL"
ENV_LOGIN_MAX_FAILURES = "WORKBENCH_LOGIN_MAX_FAILURES"
ENV_LOGIN_LOCK_MINUTES = "WORKBENCH_LOGIN_LOCK_MINUTES"
ENV_MAX_TURN_CHARS = "WORKBENCH_MAX_TURN_CHARS"
ENV_MAX_IMPORT_MB = "WORKBENCH_MAX_IMPORT_MB"

DEFAULT_DATA_DIR = Path("data")
DEFAULT_SESSION_HOURS = 12.0
# Failed logins of one account before it is locked, and the first lock's length (each further failure
# doubles it); a client gets more (workbench.throttle.CLIENT_FACTOR).
DEFAULT_LOGIN_MAX_FAILURES = 5
DEFAULT_LOGIN_LOCK_MINUTES = 5.0
DEFAULT_MODEL = "local/smollm2"
DEFAULT_MAX_TURN_CHARS = 100_000  # longer turns are refused by the importers
DEFAULT_MAX_IMPORT_MB = 2048.0  # larger import files are refused before reading
# The hosted model chosen when only its API key is set (the first key found wins).
KEY_MODELS = (
    ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
)


def sqlite_url(data_dir: Path) -> str:
    """The default database: ``sqlite:///<data dir>/workbench.db`` (absolute)."""
    return f"sqlite:///{(Path(data_dir) / 'workbench.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults the README's configuration table lists.

    ``db_url`` left empty means the SQLite file under ``data_dir``."""

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str = ""
    codebook_extensions: tuple[Path, ...] = ()
    scenario_dirs: tuple[Path, ...] = ()
    prices_file: Path | None = None
    llm_cache: bool = True
    session_hours: float = DEFAULT_SESSION_HOURS
    default_model: str = DEFAULT_MODEL
    public_url: str | None = None
    login_max_failures: int = DEFAULT_LOGIN_MAX_FAILURES
    login_lock_minutes: float = DEFAULT_LOGIN_LOCK_MINUTES
    max_turn_chars: int = DEFAULT_MAX_TURN_CHARS
    max_import_mb: float = DEFAULT_MAX_IMPORT_MB

    def __post_init__(self) -> None:
        # Frozen: the derived default is filled in once, here, so every reader sees the same URL.
        if not self.db_url:
            object.__setattr__(self, "db_url", sqlite_url(self.data_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings given by ``environ`` (default ``os.environ``); unset variables keep their
        defaults. A malformed value is a ``UserInputError`` naming the variable."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
        return cls(
            data_dir=data_dir,
            db_url=_db_url(env.get(ENV_DB_URL) or "", data_dir),
            codebook_extensions=tuple(Path(p).expanduser() for p in _path_list(env.get(ENV_CODEBOOK))),
            scenario_dirs=tuple(Path(p) for p in _path_list(env.get(ENV_SCENARIO_DIRS))),
            prices_file=Path(env[ENV_PRICES]) if env.get(ENV_PRICES) else None,
            llm_cache=_flag(env.get(ENV_LLM_CACHE), default=True),
            session_hours=_hours(env.get(ENV_SESSION_HOURS)),
            default_model=_default_model(env),
            public_url=(env.get(ENV_PUBLIC_URL) or "").strip().rstrip("/") or None,
            login_max_failures=int(
                _positive(env, ENV_LOGIN_MAX_FAILURES, DEFAULT_LOGIN_MAX_FAILURES, whole=True)
            ),
            login_lock_minutes=_positive(env, ENV_LOGIN_LOCK_MINUTES, DEFAULT_LOGIN_LOCK_MINUTES),
            max_turn_chars=int(_positive(env, ENV_MAX_TURN_CHARS, DEFAULT_MAX_TURN_CHARS, whole=True)),
            max_import_mb=_positive(env, ENV_MAX_IMPORT_MB, DEFAULT_MAX_IMPORT_MB),
        )


def _db_url(url: str, data_dir: Path) -> str:
    """``url`` unless it names an SQLite database that would not persist (in memory: every command
    would report success and keep nothing) or one in a folder that does not exist (a typo would
    otherwise create folders anywhere, even at the file-system root). The data folder itself is
    created on first use, so a database inside it is fine."""
    scheme, _, rest = url.split("?", 1)[0].partition("://")
    if scheme.split("+")[0] != "sqlite":
        return url
    path = rest[1:] if rest.startswith("/") else None
    if path is None or path in ("", ":memory:") or path.startswith("file::memory:"):
        raise UserInputError(
            f"{ENV_DB_URL}={url!r} is an in-memory database: nothing would be kept after the "
            "command; give a file (sqlite:///path/to/workbench.db) or leave it unset"
        )
    parent = Path(path).expanduser().parent
    if not parent.is_dir() and parent.resolve() != Path(data_dir).expanduser().resolve():
        raise UserInputError(
            f"{ENV_DB_URL}: the folder {parent} of the SQLite database does not exist; create it "
            f"first, or leave {ENV_DB_URL} unset to use the data folder ({ENV_DATA_DIR})"
        )
    return url


def _path_list(value: str | None) -> list[str]:
    """``os.pathsep``-separated paths (``:``, ``;`` on Windows); blank entries are skipped."""
    return [p.strip() for p in (value or "").strip().split(os.pathsep) if p.strip()]


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "off", "no")


def _positive(env: Mapping[str, str], name: str, default: float, whole: bool = False) -> float:
    """A positive number (a whole one with ``whole``) from ``env[name]``, else ``default``."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = -1
    if not value > 0:
        kind = "a positive whole number" if whole else "a positive number"
        raise UserInputError(f"{name} must be {kind}, not {raw!r}")
    return value


def _hours(raw: str | None) -> float:
    if not raw:
        return DEFAULT_SESSION_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise UserInputError(f"{ENV_SESSION_HOURS} must be a positive number of hours, not {raw!r}")
    return hours


def _default_model(env: Mapping[str, str]) -> str:
    """A hosted model when its key is set, otherwise the offline SmolLM2 model (for trying the
    pipeline, not for studies)."""
    if env.get(ENV_DEFAULT_MODEL):
        return env[ENV_DEFAULT_MODEL]
    for key, model in KEY_MODELS:
        if env.get(key):
            return model
    return DEFAULT_MODEL
