"""Shared fixtures: real SQLite files and a real throw-away PostgreSQL cluster.

``engine`` is parametrised over both backends, so a test that takes it runs twice. Locally the
PostgreSQL half skips (with the reason) when no server can be started; under CI (``CI`` set) it
fails instead, so CI always exercises PostgreSQL.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlmodel import Session

from db.engine import dispose_engines, make_engine
from db.migrate import upgrade
from tests.pg import PgUnavailable, ThrowawayCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET = Path(os.environ.get("WORKBENCH_RECLLMSIM", REPO_ROOT.parent / "shared" / "datasets" / "recllmsim"))
IN_CI = bool(os.environ.get("CI"))


def dataset_path() -> Path:
    """The released RecLLMSim data; skips the calling test where it is absent."""
    if not (DATASET / "LLM_agent_user").is_dir():
        pytest.skip(f"the released RecLLMSim dataset is not at {DATASET} (set WORKBENCH_RECLLMSIM)")
    return DATASET


@pytest.fixture(scope="session")
def recllmsim() -> Path:
    return dataset_path()


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own data directory and SQLite database; no test touches ./data."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "wbdata"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{tmp_path / 'wbdata' / 'workbench.db'}")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    dispose_engines()
    yield
    dispose_engines()


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = ThrowawayCluster()
    try:
        cluster.start()
    except (PgUnavailable, OSError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL tests must run in CI but no server could be started: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url(pg_cluster) -> str:
    return pg_cluster.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """An empty database URL on each backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    """A migrated database on SQLite and on PostgreSQL (the test runs once for each)."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url):
    eng = make_engine(sqlite_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def use_db(db_url, monkeypatch):
    """Point WORKBENCH_DB_URL (CLI, app) at the parametrised empty database."""
    monkeypatch.setenv("WORKBENCH_DB_URL", db_url)
    return db_url


@pytest.fixture(scope="session")
def reference_db(tmp_path_factory) -> str:
    """URL of an SQLite database holding the whole released dataset, imported once per test session
    as study "recllmsim" (skips where the dataset is absent). Treat it as read-only."""
    path = dataset_path()
    from workbench.dataio.recllmsim import import_recllmsim

    url = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'reference.db'}"
    eng = make_engine(url)
    upgrade(eng)
    import_recllmsim(eng, path, study="recllmsim")
    eng.dispose()
    return url
