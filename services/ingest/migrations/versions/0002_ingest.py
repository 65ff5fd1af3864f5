"""ingest: forms, webhook sources and seen webhook ids, submissions, idempotency keys.

Revision ID: ingest_0002
Revises: ingest_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "forms",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("signing_secret", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _when("deleted_at", nullable=True),
    )
    op.create_index("ix_forms_workspace", "forms", ["workspace"])
    op.create_table(
        "webhook_sources",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("mapping", sa.JSON, nullable=False),
        sa.Column("default_region", sa.String(2), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        _when("deleted_at", nullable=True),
    )
    op.create_index("ix_webhook_sources_workspace", "webhook_sources", ["workspace"])
    op.create_table(
        "webhook_messages",
        sa.Column("source_id", sa.String(40), primary_key=True),
        sa.Column("message_id", sa.String(200), primary_key=True),
        _when("received_at"),
    )
    op.create_index("ix_webhook_messages_received_at", "webhook_messages", ["received_at"])
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("errors", sa.JSON, nullable=True),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("origin", sa.String(500), nullable=True),
        sa.Column("dedupe_key", sa.String(400), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        _when("created_at"),
        _when("released_at", nullable=True),
    )
    op.create_index(
        "ix_submissions_quarantine", "submissions", ["workspace", "status", "created_at"]
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        _when("created_at"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("submissions")
    op.drop_table("webhook_messages")
    op.drop_table("webhook_sources")
    op.drop_table("forms")
