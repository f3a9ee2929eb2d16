"""login throttle: failed logins per account name and per client, with a lock time

Revision ID: 0004_login_throttle
Revises: 0003_lease
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision = "0004_login_throttle"
down_revision = "0003_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loginthrottle",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_failure", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("loginthrottle")
