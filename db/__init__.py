"""Database: SQLModel tables, engines, migrations and repository functions."""

from db.engine import get_engine, make_engine, session_scope

__all__ = ["get_engine", "make_engine", "session_scope"]
