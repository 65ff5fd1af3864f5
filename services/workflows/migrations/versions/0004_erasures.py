"""workflows: erasure markers (a digest per erased contact id, with when), so a replayed old
contact event does not bring an erased contact's projection back.

Revision ID: workflows_0004
Revises: workflows_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "workflows_0004"
down_revision = "workflows_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasures")
