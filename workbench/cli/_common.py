"""Helpers shared by the CLI modules."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from db.engine import SUPPORTED_URLS, get_engine
from db.migrate import is_current, upgrade
from workbench.errors import UserInputError, WorkbenchError


def ready_engine(url: str | None = None) -> Engine:
    """The configured engine with its schema at the newest revision (created on first use)."""
    engine = get_engine(url)
    try:
        if not is_current(engine):
            upgrade(engine)
    except WorkbenchError:
        raise
    except Exception as exc:  # connection refused, bad URL, permissions...
        raise open_error(engine, exc) from exc
    return engine


def open_error(engine: Engine, exc: BaseException) -> UserInputError:
    """One line saying why the database cannot be opened and what to do (no driver noise: the
    DBAPI's own message, first line, without SQLAlchemy's "Background on this error" link)."""
    cause = getattr(exc, "orig", None) or exc
    first = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "")
    return UserInputError(
        f"cannot open the database {engine.url.render_as_string()}: {cause.__class__.__name__}: {first}. "
        f"Check WORKBENCH_DB_URL ({SUPPORTED_URLS}) and that the server is running."
    )
