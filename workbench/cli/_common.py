"""Helpers shared by the CLI modules."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from db.engine import get_engine
from db.migrate import is_current, upgrade
from workbench.errors import WorkbenchError


def ready_engine(url: str | None = None) -> Engine:
    """The configured engine with its schema at the newest revision (created on first use)."""
    engine = get_engine(url)
    try:
        if not is_current(engine):
            upgrade(engine)
    except WorkbenchError:
        raise
    except Exception as exc:  # connection refused, bad URL, permissions...
        raise WorkbenchError(
            f"cannot open the database {engine.url.render_as_string()}: {exc.__class__.__name__}: {exc}. "
            "Check WORKBENCH_DB_URL."
        ) from exc
    return engine
