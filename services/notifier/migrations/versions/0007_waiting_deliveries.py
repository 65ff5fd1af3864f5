"""notifier: the deliveries waiting for their contact (not yet prepared) have a small partial
index of their own, by contact: a contact's arrival (every snapshot the projection takes)
finds them there, instead of probing the index of every delivery by contact. Since 0006 no
index holds `status`, which that lookup used. `prepared` never changes when a message is sent,
so the update recording it stays HOT.

Revision ID: notifier_0007
Revises: notifier_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0007"
down_revision = "notifier_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_waiting",
        "deliveries",
        ["workspace", "contact_id"],
        postgresql_where=sa.text("NOT prepared"),
        sqlite_where=sa.text("NOT prepared"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_waiting", table_name="deliveries")
