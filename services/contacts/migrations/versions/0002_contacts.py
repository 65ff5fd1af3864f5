"""contacts: contacts, tags, lists, field definitions, timeline, lifecycle history, owners and
teams, tasks, segments and their members, merge history.

The unique (workspace, email) and (workspace, phone) constraints are what makes concurrent
captures of one person end as one contact. Indexes follow the queries in store.py: keyset pages
by (workspace, created_at|updated_at, id), segment conditions on stage, owner and last
interaction, tag and list membership by (workspace, tag|list, contact_id), timelines by contact.

Revision ID: contacts_0002
Revises: contacts_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "contacts_0002"
down_revision = "contacts_0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(32)),
        sa.Column("first_name", sa.String(200)),
        sa.Column("last_name", sa.String(200)),
        sa.Column("company", sa.String(200)),
        sa.Column("job_title", sa.String(200)),
        sa.Column("country", sa.String(100)),
        sa.Column("source", sa.String(100)),
        sa.Column("lifecycle_stage", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.String(36)),
        sa.Column("subscription_status", sa.String(20), nullable=False),
        sa.Column("churn_reason", sa.String(30)),
        sa.Column("churn_reason_text", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("custom_fields", JSON, nullable=False),
        ts("created_at"),
        ts("updated_at"),
        ts("last_interaction_at", nullable=True),
        sa.Column("merged_into", sa.String(36)),
        sa.UniqueConstraint("workspace", "email", name="uq_contacts_workspace_email"),
        sa.UniqueConstraint("workspace", "phone", name="uq_contacts_workspace_phone"),
    )
    op.create_index("ix_contacts_workspace_created", "contacts", ["workspace", "created_at", "id"])
    op.create_index("ix_contacts_workspace_updated", "contacts", ["workspace", "updated_at", "id"])
    op.create_index("ix_contacts_workspace_stage", "contacts", ["workspace", "lifecycle_stage"])
    op.create_index(
        "ix_contacts_workspace_interaction", "contacts", ["workspace", "last_interaction_at"]
    )
    op.create_index("ix_contacts_workspace_owner", "contacts", ["workspace", "owner_id"])
    op.create_index("ix_contacts_merged_into", "contacts", ["merged_into"])

    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.String(100), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
    )
    op.create_index(
        "ix_contact_tags_workspace_tag", "contact_tags", ["workspace", "tag", "contact_id"]
    )
    op.create_table(
        "contact_lists",
        sa.Column("contact_id", sa.String(36), primary_key=True),
        sa.Column("list", sa.String(100), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
    )
    op.create_index(
        "ix_contact_lists_workspace_list", "contact_lists", ["workspace", "list", "contact_id"]
    )
    op.create_table(
        "field_definitions",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("label", sa.String(200)),
        sa.Column("required", sa.Boolean, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("min", sa.Float),
        sa.Column("max", sa.Float),
        sa.Column("max_length", sa.Integer),
        sa.Column("pattern", sa.String(500)),
    )
    op.create_table(
        "activities",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        ts("occurred_at"),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_index("ix_activities_contact", "activities", ["contact_id", "occurred_at", "id"])
    op.create_index("ix_activities_workspace", "activities", ["workspace", "occurred_at"])
    op.create_table(
        "lifecycle_changes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("from_stage", sa.String(20)),
        sa.Column("to_stage", sa.String(20), nullable=False),
        ts("changed_at"),
        sa.Column("churn_reason", sa.String(30)),
        sa.Column("churn_reason_text", sa.Text),
    )
    op.create_index(
        "ix_lifecycle_changes_stage", "lifecycle_changes", ["workspace", "to_stage", "changed_at"]
    )
    op.create_index(
        "ix_lifecycle_changes_contact", "lifecycle_changes", ["contact_id", "changed_at"]
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(20), nullable=False),
        sa.Column("last_owner_id", sa.String(36)),
        sa.UniqueConstraint("workspace", "name", name="uq_teams_workspace_name"),
    )
    op.create_table(
        "owners",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("team_id", sa.String(36)),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("credit", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_owners_team", "owners", ["team_id", "position"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("due_date", sa.Date),
        sa.Column("assignee_id", sa.String(36)),
        sa.Column("status", sa.String(10), nullable=False),
        ts("created_at"),
        ts("completed_at", nullable=True),
    )
    op.create_index(
        "ix_tasks_assignee", "tasks", ["workspace", "assignee_id", "status", "due_date"]
    )
    op.create_index("ix_tasks_contact", "tasks", ["contact_id"])
    op.create_table(
        "segments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("filter", JSON, nullable=False),
        sa.Column("time_based", sa.Boolean, nullable=False),
        ts("created_at"),
    )
    op.create_index("ix_segments_workspace", "segments", ["workspace"])
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("contact_id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        ts("entered_at"),
    )
    op.create_index("ix_segment_members_contact", "segment_members", ["contact_id"])
    op.create_table(
        "merges",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace", sa.String(63), nullable=False),
        sa.Column("survivor_id", sa.String(36), nullable=False),
        sa.Column("merged_id", sa.String(36), nullable=False),
        sa.Column("chosen", JSON, nullable=False),
        ts("merged_at"),
    )
    op.create_index("ix_merges_survivor", "merges", ["survivor_id"])


def downgrade() -> None:
    for table in (
        "merges",
        "segment_members",
        "segments",
        "tasks",
        "owners",
        "teams",
        "lifecycle_changes",
        "activities",
        "field_definitions",
        "contact_lists",
        "contact_tags",
        "contacts",
    ):
        op.drop_table(table)
