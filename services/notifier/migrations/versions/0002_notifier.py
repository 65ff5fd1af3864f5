"""notifier: channels, templates, contact projection, workspace settings, deliveries with
their attempts, suppressions.

Indexes follow the queries in store.py: due deliveries by (status, next_attempt_at), the log
by (workspace, contact_id, created_at) and (workspace, created_at), idempotency by the unique
(workspace, idempotency_key).

Revision ID: notifier_0002
Revises: notifier_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "notifier_0002"
down_revision = "notifier_0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("sealed_secrets", sa.Text),
        sa.Column("secret_names", JSON, nullable=False),
        ts("created_at"),
        ts("updated_at"),
        sa.UniqueConstraint("workspace", "name", name="uq_channels_workspace"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("html", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("blocks", JSON),
        ts("created_at"),
        ts("updated_at"),
        sa.UniqueConstraint("workspace", "name", name="uq_templates_workspace"),
    )
    op.create_table(
        "contacts",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("snapshot", JSON, nullable=False),
        ts("updated_at"),
    )
    op.create_table(
        "workspace_settings",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("values", JSON, nullable=False),
        ts("updated_at"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("contact_id", sa.String(64)),
        sa.Column("channel_id", sa.String(40)),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(320)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("prepared", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.Column("provider_message_id", sa.String(300)),
        sa.Column("correlation_id", sa.String(64)),
        sa.Column("requested_by", sa.String(200)),
        ts("created_at"),
        ts("updated_at"),
        ts("next_attempt_at", nullable=True),
        ts("claimed_at", nullable=True),
        ts("first_attempt_at", nullable=True),
        ts("finished_at", nullable=True),
        sa.UniqueConstraint("workspace", "idempotency_key", name="uq_deliveries_workspace"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index(
        "ix_deliveries_contact", "deliveries", ["workspace", "contact_id", "created_at"]
    )
    op.create_index("ix_deliveries_workspace", "deliveries", ["workspace", "created_at"])
    op.create_table(
        "attempts",
        sa.Column("delivery_id", sa.String(40), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        ts("started_at"),
        ts("finished_at", nullable=True),
        sa.Column("outcome", sa.String(20)),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", sa.Text),
    )
    op.create_table(
        "suppressions",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("contact_id", sa.String(64)),
        ts("created_at"),
    )


def downgrade() -> None:
    for table in (
        "suppressions",
        "attempts",
        "deliveries",
        "workspace_settings",
        "contacts",
        "templates",
        "channels",
    ):
        op.drop_table(table)
