"""contacts: the per-workspace rule assigning new contacts an owner at capture.

Revision ID: contacts_0004
Revises: contacts_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "contacts_0004"
down_revision = "contacts_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capture_assignments",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("team_id", sa.String(36), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("capture_assignments")
