"""notifier: a paced message held in memory for its slot is leased (`held_by`, `held_until`),
not claimed as an attempt, so a process that dies while holding it leaves it to be sent later;
each delivery keeps its request's trace (`traceparent`) for its outcome events.

Revision ID: notifier_0004
Revises: notifier_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0004"
down_revision = "notifier_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("held_by", sa.String(40)))
    op.add_column("deliveries", sa.Column("held_until", sa.DateTime(timezone=True)))
    op.add_column("deliveries", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    for column in ("traceparent", "held_until", "held_by"):
        op.drop_column("deliveries", column)
