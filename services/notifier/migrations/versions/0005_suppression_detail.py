"""notifier: a suppression keeps what its reporter said (`detail`: a feedback-loop report's id,
a bounce's text), recorded over `POST /v1/suppressions`.

Revision ID: notifier_0005
Revises: notifier_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0005"
down_revision = "notifier_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("suppressions", sa.Column("detail", sa.Text()))


def downgrade() -> None:
    op.drop_column("suppressions", "detail")
