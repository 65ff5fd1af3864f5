"""ingest: erasure markers, and submissions' identity digests so an erasure finds them.

Revision ID: ingest_0003
Revises: ingest_0002
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_erasures_table

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_erasures_table()
    for column in ("email_digest", "phone_digest"):
        op.add_column("submissions", sa.Column(column, sa.String(64), nullable=True))
        op.create_index(f"ix_submissions_{column}", "submissions", [column])


def downgrade() -> None:
    for column in ("email_digest", "phone_digest"):
        op.drop_index(f"ix_submissions_{column}", "submissions")
        op.drop_column("submissions", column)
    op.drop_table("erasures")
