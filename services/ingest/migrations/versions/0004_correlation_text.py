"""ingest: a submission's correlation id as text.

Callers may send correlation ids of up to 128 characters; PostgreSQL's bulk insert cut them to
the column's 64 without a word, so a released submission's lead carried another id than the
one the caller sent. On PostgreSQL, varchar to text changes only the catalogue (no table
rewrite); SQLite never enforced the length.

Revision ID: ingest_0004
Revises: ingest_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0004"
down_revision = "ingest_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("submissions", "correlation_id", type_=sa.Text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("submissions", "correlation_id", type_=sa.String(64))
