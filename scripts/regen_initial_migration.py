"""Regenerate db/migrations/versions/0001_initial.py from the SQLModel tables.

Retired: databases made with 0001 exist (the app creates them on first use), so schema changes are
now ordinary revisions after it (0002_run_owner is the first; write the next one by hand or with
``alembic revision --autogenerate``). The script refuses to run while later revisions exist.

Usage: python scripts/regen_initial_migration.py
"""

import tempfile
from pathlib import Path

from alembic import command

from db.engine import make_engine
from db.migrate import MIGRATIONS_DIR, alembic_config

target = MIGRATIONS_DIR / "versions" / "0001_initial.py"
later = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py") if p.name != target.name)
if later:
    raise SystemExit(f"refusing: revisions after 0001 exist ({', '.join(later)}); add a new revision instead")
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
