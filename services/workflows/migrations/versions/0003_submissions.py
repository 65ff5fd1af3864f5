"""workflows: form submissions seen from the lead and from the contact event, paired once for
the form-submitted trigger.

Revision ID: workflows_0003
Revises: workflows_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "workflows_0003"
down_revision = "workflows_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("submission_id", sa.String(64), primary_key=True),
        sa.Column("form_id", sa.String(64)),
        sa.Column("contact_id", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_submissions_contact", "submissions", ["workspace", "contact_id"])


def downgrade() -> None:
    op.drop_table("submissions")
