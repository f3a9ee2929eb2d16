"""Database: SQLModel tables, engines, settings, errors, migrations and repository functions."""

from importlib.metadata import PackageNotFoundError, version

from db.engine import get_engine, make_engine, ready_engine, session_scope
from db.errors import DatabaseUnavailable, MissingKeyError, NotFoundError, UserInputError, WorkbenchError

try:
    __version__ = version("llm-user-workbench")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DatabaseUnavailable",
    "MissingKeyError",
    "NotFoundError",
    "UserInputError",
    "WorkbenchError",
    "__version__",
    "get_engine",
    "make_engine",
    "ready_engine",
    "session_scope",
]
