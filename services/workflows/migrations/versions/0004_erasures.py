"""workflows: erasure markers (a digest per erased contact id, with when), so a replayed old
contact event does not bring an erased contact's projection back.

Revision ID: workflows_0004
Revises: workflows_0003
"""

from alembic import op

from shared.migrations import create_erasures_table

revision = "workflows_0004"
down_revision = "workflows_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_erasures_table()


def downgrade() -> None:
    op.drop_table("erasures")
