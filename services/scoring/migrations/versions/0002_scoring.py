"""scoring: rule sets, contacts projection, score states, engagement ledger, timers, rescores,
RFM stats and breakpoints, engagement set aside.

Indexes follow store.py: the ledger by (workspace, contact) for replay and by (workspace,
occurred_at) for simulating recent engagement; timers by due_at for the claim loop.

Revision ID: scoring_0002
Revises: scoring_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "scoring_0002"
down_revision = "scoring_0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def ws() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("workspace", sa.String(63), primary_key=True)


def contact() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("contact_id", sa.String(36), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        ws(),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("body", JSON, nullable=False),
        ts("created_at"),
    )
    op.create_table(
        "contacts",
        ws(),
        contact(),
        sa.Column("email", sa.String(320)),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False),
    )
    op.create_index("ix_contacts_workspace_email", "contacts", ["workspace", "email"])
    op.create_table(
        "scores",
        ws(),
        contact(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", JSON, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        ts("occurred_at"),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_index("ix_ledger_workspace_contact", "ledger", ["workspace", "contact_id"])
    op.create_index("ix_ledger_workspace_occurred", "ledger", ["workspace", "occurred_at"])
    op.create_table(
        "timers",
        ws(),
        contact(),
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("group", sa.String(63), primary_key=True),
        ts("due_at"),
    )
    op.create_index("ix_timers_due_at", "timers", ["due_at"])
    op.create_table(
        "rescores",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("cursor", sa.String(36), nullable=False),
        ts("created_at"),
        ts("finished_at", nullable=True),
    )
    op.create_index("ix_rescores_status", "rescores", ["status"])
    op.create_table(
        "rfm",
        ws(),
        contact(),
        sa.Column("first_at", sa.Float, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("purchases", sa.Integer, nullable=False),
        sa.Column("monetary", sa.Float, nullable=False),
        sa.Column("recent_interval_s", sa.Float),
        sa.Column("r", sa.Integer, nullable=False),
        sa.Column("f", sa.Integer, nullable=False),
        sa.Column("m", sa.Integer, nullable=False),
        sa.Column("segment", sa.String(20), nullable=False),
        sa.Column("risk", sa.Integer, nullable=False),
        sa.Column("band", sa.String(10), nullable=False),
    )
    op.create_index("ix_rfm_workspace_segment", "rfm", ["workspace", "segment"])
    op.create_table(
        "rfm_breakpoints",
        ws(),
        sa.Column("recency_days", JSON, nullable=False),
        sa.Column("frequency", JSON, nullable=False),
        sa.Column("monetary", JSON, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        ts("computed_at"),
    )
    op.create_table(
        "set_aside",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(36)),
        sa.Column("email", sa.String(320)),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        ts("occurred_at"),
        sa.Column("data", JSON, nullable=False),
        ts("received_at"),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_set_aside_workspace_contact", "set_aside", ["workspace", "contact_id"])
    op.create_index("ix_set_aside_workspace_email", "set_aside", ["workspace", "email"])


def downgrade() -> None:
    for table in (
        "set_aside",
        "rfm_breakpoints",
        "rfm",
        "rescores",
        "timers",
        "ledger",
        "scores",
        "contacts",
        "rule_sets",
    ):
        op.drop_table(table)
