"""notifier: a delivery's correlation id as text, as long as any event's.

A timer-started workflow run names its correlation `trigger:<workflow>:<contact>` (68
characters) and callers may send 128: a 64-character column refused the delivery, which went
to the DLQ. On PostgreSQL, varchar to text changes only the catalogue (no table rewrite);
SQLite never enforced the length.

Revision ID: notifier_0003
Revises: notifier_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0003"
down_revision = "notifier_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("deliveries", "correlation_id", type_=sa.Text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("deliveries", "correlation_id", type_=sa.String(64))
