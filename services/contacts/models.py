"""contacts's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from shared.db import new_base
from shared.inbox import inbox_table
from shared.outbox import outbox_table

Base = new_base()
outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
