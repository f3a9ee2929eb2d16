"""Regenerate db/migrations/versions/0001_initial.py from the SQLModel tables.

The project has not shipped a release yet, so the whole schema is one initial migration; run this
after changing any table in db/models/. Once a release is out, add ordinary Alembic revisions
instead (``alembic revision --autogenerate``) and stop using this script.

Usage: python scripts/regen_initial_migration.py
"""

import tempfile
from pathlib import Path

from alembic import command

from db.engine import make_engine
from db.migrate import MIGRATIONS_DIR, alembic_config

target = MIGRATIONS_DIR / "versions" / "0001_initial.py"
if target.exists():
    target.unlink()
with tempfile.TemporaryDirectory() as tmp:
    engine = make_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
    command.revision(
        alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001_initial"
    )
produced = next((MIGRATIONS_DIR / "versions").glob("0001_initial*.py"))
if produced != target:
    produced.rename(target)
print(f"wrote {target}")
