"""leases: the process working on a long job (LLM labelling), so a second one is refused

Revision ID: 0003_lease
Revises: 0002_run_owner
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision = "0003_lease"
down_revision = "0002_run_owner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("started_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("lease")
