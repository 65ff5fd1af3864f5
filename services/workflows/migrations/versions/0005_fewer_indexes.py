"""workflows: two indexes fewer to keep up on every run (a new lead's alert writes a run and
two history lines): a run's history is found by its runs (`ix_step_runs_enrollment`), not by
contact, and a (workflow, contact) pair's runs by the contact (`ix_enrollments_contact`).

Revision ID: workflows_0005
Revises: workflows_0004
"""

from alembic import op

revision = "workflows_0005"
down_revision = "workflows_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_step_runs_contact", table_name="step_runs")
    op.drop_index("ix_enrollments_last", table_name="enrollments")


def downgrade() -> None:
    op.create_index(
        "ix_enrollments_last",
        "enrollments",
        ["workspace", "workflow_id", "contact_id", "enrolled_at"],
    )
    op.create_index("ix_step_runs_contact", "step_runs", ["workspace", "contact_id"])
