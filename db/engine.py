"""Database engines and sessions for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlmodel import Session, create_engine

from db import settings
from db.errors import DatabaseUnavailable, UserInputError, WorkbenchError
from db.migrate import is_current, upgrade

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_POOL_SIZE = 20  # connections kept open per process (PostgreSQL)
PG_MAX_OVERFLOW = 20  # extra connections opened under load, closed when returned
SUPPORTED_URLS = "sqlite:///path/to/file.db or postgresql://user:pass@host:5432/dbname"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, **kw) -> Engine:
    """A new engine for the database at ``url`` (``Settings.db_url`` for the configured one).

    SQLite runs with WAL, foreign keys on and a busy timeout; its parent directory is created.
    """
    u = _parse(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            parent = Path(u.database).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserInputError(
                    f"cannot create the directory {parent} of the SQLite database "
                    f"({exc.strerror or exc}): point {settings.ENV_DB_URL} (or "
                    f"{settings.ENV_DATA_DIR}) at a writable place"
                ) from None
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_engine(url, connect_args=connect_args, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy open transactions with BEGIN IMMEDIATE-free defaults; pysqlite's own
        # transaction handling is fine with WAL for our write sizes.
        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    kw.setdefault("pool_pre_ping", True)
    # Every browser session of the app and every participant's write needs a connection for a few
    # milliseconds; with SQLAlchemy's default pool (5 + 10 overflow) 200 participants queued for a
    # connection and p95 turn persistence reached 2 s (benchmarks/bench_participants.py). 20 kept + 20
    # overflow per process (overflow connections are closed on return, so under steady load a small
    # kept pool opened and closed connections all the time) lets two servers stay under PostgreSQL's
    # default max_connections (100).
    kw.setdefault("pool_size", PG_POOL_SIZE)
    kw.setdefault("max_overflow", PG_MAX_OVERFLOW)
    try:
        return create_engine(url, **kw)
    except ImportError as exc:  # the driver is not installed (psycopg without the postgres extra)
        raise UserInputError(
            f"the database driver for {u.render_as_string()} is not installed ({exc}): "
            "install it (postgresql:// URLs use psycopg: pip install -e '.[postgres]')"
        ) from None


def _parse(url: str):
    """The parsed URL of a database the workbench supports (SQLite, PostgreSQL), else a one-line error."""
    try:
        u = make_url(url)
    except ArgumentError:
        shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", str(url))
        raise UserInputError(
            f"{settings.ENV_DB_URL} {shown!r} is not a database URL: use {SUPPORTED_URLS}"
        ) from None
    try:
        backend = u.get_backend_name()
        u.get_dialect()
    except NoSuchModuleError:
        backend = None
    if backend not in ("sqlite", "postgresql"):
        raise UserInputError(
            f"unsupported database {u.render_as_string()} in {settings.ENV_DB_URL}: the workbench "
            f"runs on SQLite and PostgreSQL; use {SUPPORTED_URLS}"
        )
    return u


def get_engine(url: str) -> Engine:
    """A shared engine per URL for the process (the app and the CLI use this)."""
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def dispose_engines() -> None:
    """Close and forget every shared engine (tests call it between databases; a long-lived process
    may call it to drop its connection pools)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def ready_engine(url: str) -> Engine:
    """The shared engine for ``url`` with its schema at the newest revision (created on first use).
    An in-memory SQLite database is refused: each command would start empty and keep nothing."""
    u = _parse(url)
    if u.get_backend_name() == "sqlite" and (u.database or ":memory:") == ":memory:":
        raise UserInputError(
            f"{settings.ENV_DB_URL} {url!r} is an in-memory database: nothing would be kept; "
            "give a file (sqlite:///path/to/workbench.db)"
        )
    engine = get_engine(url)
    try:
        if not is_current(engine):
            upgrade(engine)
    except WorkbenchError:
        raise
    except Exception as exc:  # connection refused, bad URL, permissions...
        raise open_error(engine, exc) from exc
    return engine


def open_error(engine: Engine, exc: BaseException) -> DatabaseUnavailable:
    """One line saying why the database cannot be opened and what to do (no driver noise: the
    DBAPI's own message, first line, without SQLAlchemy's "Background on this error" link)."""
    cause = getattr(exc, "orig", None) or exc
    first = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "")
    return DatabaseUnavailable(
        f"cannot open the database {engine.url.render_as_string()}: {cause.__class__.__name__}: {first}. "
        f"Check WORKBENCH_DB_URL ({SUPPORTED_URLS}) and that the server is running."
    )
