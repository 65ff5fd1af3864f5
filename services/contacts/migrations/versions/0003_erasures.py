"""contacts: erasure markers (a digest per identity of an erased person, with when).

Revision ID: contacts_0003
Revises: contacts_0002
"""

from alembic import op

from shared.migrations import create_erasures_table

revision = "contacts_0003"
down_revision = "contacts_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_erasures_table()


def downgrade() -> None:
    op.drop_table("erasures")
