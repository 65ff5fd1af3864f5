"""What every part of the workflows store shares: the tables, the session with its dialect
helpers, and SQL that turns a JSON document of rows into a set (see `store.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    any_,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.workflows.models import (
    ContactView,
    Enrollment,
    SentEffect,
    StepRun,
    Submission,
    Timer,
    Workflow,
    WorkflowVersion,
    inbox,
    outbox,
)

ENROLLMENTS: Table = Enrollment.__table__  # type: ignore[assignment]
STEPS: Table = StepRun.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
CONTACTS: Table = ContactView.__table__  # type: ignore[assignment]
EFFECTS: Table = SentEffect.__table__  # type: ignore[assignment]
WORKFLOWS: Table = Workflow.__table__  # type: ignore[assignment]
VERSIONS: Table = WorkflowVersion.__table__  # type: ignore[assignment]
SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
OUTBOX: Table = outbox
INBOX: Table = inbox
PROJECTION = ("email", "data", "merged_into", "updated_at")


def json_rows(table: Table, param: str, binary: bool = False) -> str:
    """The rows of the JSON document `param` as `table`'s records. `binary` parses it as jsonb
    first: twice as fast for rows carrying a large JSON column (the projection's contacts,
    whose `data` is otherwise parsed again from text), a little slower for the others."""
    if binary:
        return f'jsonb_populate_recordset(NULL::"{table.name}", CAST(:{param} AS jsonb))'
    return f'json_populate_recordset(NULL::"{table.name}", CAST(:{param} AS json))'


def insert_sql(table: Table, param: str, tail: str = "", binary: bool = False) -> str:
    """Insert the JSON document `param`'s rows (every column but a generated `id`)."""
    names = ", ".join(
        f'"{c.name}"' for c in table.c if not (c.name == "id" and c.autoincrement is True)
    )
    rows = json_rows(table, param, binary)
    return f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {rows}{tail}'


class StoreBase:
    """The caller's transaction and the dialect helpers every part of the store uses."""

    """Queries over this service's tables, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # The earliest timer this transaction scheduled: the door wakes the timer loop with it.
        self.earliest_timer: datetime | None = None

    @property
    def postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def _among(self, column: Column[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """`column IN values`; on PostgreSQL `= ANY(<one array>)`: one statement text for
        every batch size (cached and prepared once), not a parameter per value."""
        if self.postgres:
            return column == any_(
                bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
            )
        return column.in_(values)

    def _joined(
        self, query: Select[Any], column: Column[Any], values: Sequence[Any]
    ) -> Select[Any]:
        """`query` limited to the rows whose `column` is among `values`. On PostgreSQL joined to
        the array's rows, one index probe each: tested as `= ANY(array)`, a prepared
        statement's generic plan (from its sixth run on, blind to the array), made while the
        table was young, may walk every row of the workspace through another index and test
        each against the array (the runs of 115 notification outcomes: ~17 ms at 5,000
        runs). A query locking rows names its table (`FOR UPDATE OF`)."""
        if not self.postgres:
            return query.where(column.in_(values))
        listed = (
            func.unnest(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
            .table_valued("v")
            .render_derived()
        )
        return query.join(listed, column == listed.c.v)

    async def _upsert(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        key: Sequence[str],
        update: Sequence[str],
    ) -> None:
        """Insert whole rows, or set `update` on the rows already holding their `key`. On
        PostgreSQL the batch travels as one JSON document (`json_populate_recordset`, typed by
        the table), like `shared.db.insert_json_rows`."""
        if not self.postgres:
            stmt = self._insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c[k] for k in key], set_={n: stmt.excluded[n] for n in update}
            )
            await self.session.execute(stmt, list(rows))
            return
        names = ", ".join(f'"{n}"' for n in rows[0])
        sets = ", ".join(f'"{n}" = excluded."{n}"' for n in update)
        keys = ", ".join(f'"{k}"' for k in key)
        sql = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM '
            f'json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json)) '
            f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        )
        document = orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()
        await self.session.execute(text(sql), {"rows": document})

    async def save_contacts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Upsert contact projection rows (workspace, id, email, data, merged_into,
        updated_at); runs carry them too (see `write_runs`)."""
        if not rows:
            return
        # One row per contact: a statement may not update the same row twice.
        unique = list({(r["workspace"], r["id"]): r for r in rows}.values())
        await self._upsert(CONTACTS, unique, ("workspace", "id"), PROJECTION)
