"""contacts: two indexes a captured lead no longer pays for.

- `ix_activities_workspace` (workspace, occurred_at): no query reads the timeline by workspace
  (it is read by contact, `ix_activities_contact`); every timeline row paid its insert.
- `ix_contacts_merged_into` becomes partial (`merged_into IS NOT NULL`): it serves only the
  lookups of the stubs merged into a contact (`merged_into = :id`), and a new contact, never
  merged, no longer adds an entry to it.

Revision ID: contacts_0005
Revises: contacts_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "contacts_0005"
down_revision = "contacts_0004"
branch_labels = None
depends_on = None

MERGED = sa.text("merged_into IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_activities_workspace", table_name="activities")
    op.drop_index("ix_contacts_merged_into", table_name="contacts")
    op.create_index(
        "ix_contacts_merged_into",
        "contacts",
        ["merged_into"],
        postgresql_where=MERGED,
        sqlite_where=MERGED,
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_merged_into", table_name="contacts")
    op.create_index("ix_contacts_merged_into", "contacts", ["merged_into"])
    op.create_index("ix_activities_workspace", "activities", ["workspace", "occurred_at"])
