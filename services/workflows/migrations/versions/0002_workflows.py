"""workflows: definitions and their versions, runs and their step history, durable timers,
the contact projection and the effects runs sent.

Indexes follow store.py: runs by contact (events, merges, erasure), by workflow and status
(pages, counts) and by workflow and contact (re-enrollment); timers by due time (the claim).

Revision ID: workflows_0002
Revises: workflows_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "workflows_0002"
down_revision = "workflows_0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("trigger_type", sa.String(40), nullable=False),
        ts("created_at"),
        ts("updated_at"),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("workflow_id", sa.String(40), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("document", JSON, nullable=False),
        ts("created_at"),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("step", sa.String(64)),
        sa.Column("outcomes", JSON, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("wait_event", sa.String(100)),
        ts("wait_until", nullable=True),
        sa.Column("error", sa.Text),
        ts("enrolled_at"),
        ts("updated_at"),
        ts("ended_at", nullable=True),
    )
    op.create_index("ix_enrollments_contact", "enrollments", ["workspace", "contact_id"])
    op.create_index(
        "ix_enrollments_workflow", "enrollments", ["workspace", "workflow_id", "status"]
    )
    op.create_index(
        "ix_enrollments_last",
        "enrollments",
        ["workspace", "workflow_id", "contact_id", "enrolled_at"],
    )
    op.create_table(
        "step_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("enrollment_id", sa.String(40), nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("step_type", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(60), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("error", sa.Text),
        ts("at"),
    )
    op.create_index("ix_step_runs_enrollment", "step_runs", ["enrollment_id", "id"])
    op.create_index("ix_step_runs_contact", "step_runs", ["workspace", "contact_id"])
    op.create_table(
        "timers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        ts("due_at"),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("enrollment_id", sa.String(40)),
        sa.Column("workflow_id", sa.String(40)),
        sa.Column("step", sa.String(64)),
        sa.Column("failures", sa.Integer, nullable=False),
    )
    op.create_index("ix_timers_due", "timers", ["due_at"])
    op.create_index("ix_timers_contact", "timers", ["workspace", "contact_id"])
    op.create_table(
        "contacts",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("data", JSON, nullable=False),
        sa.Column("merged_into", sa.String(64)),
        ts("updated_at"),
    )
    op.create_index("ix_contacts_email", "contacts", ["workspace", "email"])
    op.create_table(
        "sent_effects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("enrollment_id", sa.String(40), nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        ts("created_at"),
    )
    op.create_index("ix_sent_effects_enrollment", "sent_effects", ["enrollment_id"])


def downgrade() -> None:
    for table in (
        "sent_effects",
        "contacts",
        "timers",
        "step_runs",
        "enrollments",
        "workflow_versions",
        "workflows",
    ):
        op.drop_table(table)
