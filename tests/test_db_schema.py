from datetime import datetime, timedelta, timezone

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
