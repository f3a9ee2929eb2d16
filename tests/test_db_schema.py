import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from db.engine import make_engine
from db.migrate import current_revision, head_revision, upgrade
from db.models import Study, Turn


def test_upgrade_empty_database_creates_every_table(db_url):
    eng = make_engine(db_url)
    assert current_revision(eng) is None
    assert upgrade(eng) == head_revision(eng)
    tables = set(inspect(eng).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    # idempotent
    assert upgrade(eng) == head_revision(eng)
    eng.dispose()


def test_a_database_made_with_0001_upgrades_and_keeps_its_runs(db_url):
    eng = make_engine(db_url)
    assert upgrade(eng, "0001_initial") == "0001_initial"
    with eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO study (name, language, settings, source, created_at) "
                "VALUES ('old', 'en', '{}', 'created', '2025-01-01 00:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO simulatorconfig (fingerprint, model, prompt_version, params, name, created_at) "
                "VALUES ('fp', 'scripted/x', '1', '{}', 'sim', '2025-01-01 00:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO simulationrun (study_id, key, simulator_config_id, params, status, created_at) "
                "SELECT s.id, 'k', c.id, '{}', 'running', '2025-01-01 00:00:00+00:00' "
                "FROM study s, simulatorconfig c"
            )
        )
    assert upgrade(eng) == head_revision(eng) != "0001_initial"
    with eng.connect() as conn:
        assert conn.execute(text("SELECT key, owner FROM simulationrun")).all() == [("k", None)]
    eng.dispose()


def test_migration_matches_models(engine):
    """The migrations produce exactly the schema the models declare (no forgotten migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a revision under db/migrations/versions: {diff}"


def test_times_are_utc_aware(session):
    local = datetime(2025, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    st = Study(name="tz", created_at=local)
    session.add(st)
    session.commit()
    session.expire_all()
    got = session.exec(select(Study).where(Study.name == "tz")).one()
    assert got.created_at.tzinfo is not None
    assert got.created_at == local
    assert got.created_at.utcoffset() == timedelta(0)


def test_naive_datetime_rejected(session):
    session.add(Study(name="naive", created_at=datetime(2025, 1, 1)))
    with pytest.raises(Exception, match="naive"):
        session.commit()


def test_foreign_keys_enforced(session):
    session.add(Turn(conversation_id=999999, index=0, role="user", content="hi"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_sqlite_pragmas(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_settings_from_env_defaults_and_variables(tmp_path):
    """Settings.from_env reads every WORKBENCH_* variable (and only an explicit mapping when given)."""
    from db.errors import UserInputError
    from db.settings import Settings, sqlite_url

    s = Settings.from_env({})
    assert s == Settings() and s.db_url == sqlite_url(Path("data")) and s.llm_cache
    assert (s.codebook_extensions, s.scenario_dirs, s.prices_file, s.public_url) == ((), (), None, None)
    assert (s.session_hours, s.default_model) == (12.0, "local/smollm2")
    assert Settings.from_env({"ANTHROPIC_API_KEY": "k"}).default_model == "anthropic/claude-3-5-haiku-latest"
    assert (
        Settings.from_env({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}).default_model
        == "openai/gpt-4o-mini"
    )
    env = {
        "WORKBENCH_DATA_DIR": str(tmp_path),
        "WORKBENCH_CODEBOOK": os.pathsep.join(["a.yaml", " ", "b.yaml"]),
        "WORKBENCH_SCENARIO_DIRS": "packs",
        "WORKBENCH_PRICES": "p.yaml",
        "WORKBENCH_LLM_CACHE": "off",
        "WORKBENCH_STAFF_SESSION_HOURS": "0.5",
        "WORKBENCH_DEFAULT_MODEL": "scripted/x",
        "WORKBENCH_PUBLIC_URL": " https://lab.example.org/ ",
    }
    s = Settings.from_env(env)
    assert s.db_url == f"sqlite:///{(tmp_path / 'workbench.db').resolve()}"
    assert s.codebook_extensions == (Path("a.yaml"), Path("b.yaml")) and s.scenario_dirs == (Path("packs"),)
    assert (s.prices_file, s.llm_cache, s.session_hours) == (Path("p.yaml"), False, 0.5)
    assert (s.default_model, s.public_url) == ("scripted/x", "https://lab.example.org")
    assert Settings.from_env({**env, "WORKBENCH_DB_URL": "postgresql://h/db"}).db_url == "postgresql://h/db"
    with pytest.raises(UserInputError, match="WORKBENCH_STAFF_SESSION_HOURS"):
        Settings.from_env({"WORKBENCH_STAFF_SESSION_HOURS": "0"})
