"""llmcall (run_id, created_at) index: the workers of a shared run read the run's spend and its
calls of the last minute before every call when a budget or a rate limit is set

Revision ID: 0006_llmcall_run_index
Revises: 0005_simulation_claims
"""

from alembic import op

revision = "0006_llmcall_run_index"
down_revision = "0005_simulation_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_llmcall_run_created", "llmcall", ["run_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_llmcall_run_created", table_name="llmcall")
