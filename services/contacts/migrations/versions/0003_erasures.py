"""contacts: erasure markers (a digest per identity of an erased person, with when).

Revision ID: contacts_0003
Revises: contacts_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "contacts_0003"
down_revision = "contacts_0002"
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
