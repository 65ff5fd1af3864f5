"""access: outbox and inbox.

Revision ID: access_0001
Revises:
"""

from shared.migrations import create_platform_tables

revision = "access_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables()


def downgrade() -> None:
    from alembic import op

    op.drop_table("inbox")
    op.drop_table("outbox")
