"""simulation claims: which worker simulates which conversation of a run shared by several processes

Revision ID: 0005_simulation_claims
Revises: 0004_login_throttle
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision = "0005_simulation_claims"
down_revision = "0004_login_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "simulationclaim",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("condition_id", sa.Integer(), nullable=False),
        sa.Column("replicate", sa.Integer(), nullable=False),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("heartbeat_at", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["condition_id"], ["condition.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["simulationrun.id"]),
        sa.PrimaryKeyConstraint("run_id", "condition_id", "replicate"),
    )


def downgrade() -> None:
    op.drop_table("simulationclaim")
