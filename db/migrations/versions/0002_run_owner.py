"""simulation runs record the process working on them (owner, heartbeat)

Revision ID: 0002_run_owner
Revises: 0001_initial
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision = "0002_run_owner"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("simulationrun", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", db.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("simulationrun", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("owner")
