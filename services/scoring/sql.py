"""The SQL plumbing scoring's area stores share: a repository over one unit of work's session
on PostgreSQL or SQLite, upserts of any number of rows in one statement, `IN` as one array
parameter, and SQLite's write lock."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import String, Table, TextClause, any_, literal, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import ScoreRow

CHUNK = 1000  # rows per multi-row statement (well under both databases' parameter limits)


def chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    if not rows:
        return
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class SqlBase:
    """Queries over one unit of work's session, on PostgreSQL or SQLite."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    # --- helpers --------------------------------------------------------------------------

    async def _upsert(
        self, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
    ) -> None:
        """Insert rows, or update the existing ones (by `keys`) with the new values."""
        if not rows:
            return
        if self.postgres:
            statement = _unnest_upsert(table, tuple(rows[0]), tuple(keys))
            await self.session.execute(statement, _arrays(table, rows))
            return
        for part in chunks(rows):
            stmt = sqlite.insert(table).values(list(part))
            updates = {c: stmt.excluded[c] for c in part[0] if c not in keys}
            await self.session.execute(
                stmt.on_conflict_do_update(index_elements=keys, set_=updates)
            )

    async def driver(self) -> Any:
        """The PostgreSQL driver's connection of this transaction, for the hot paths' bulk
        reads: rows straight from asyncpg, without SQLAlchemy's processing of each."""
        connection = await self.session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # a live connection of this transaction
        if not driver.is_in_transaction():
            # SQLAlchemy sends BEGIN with its first statement: send one first, so that what
            # the driver runs here (row locks above all) belongs to this transaction.
            await self.session.execute(text("SELECT 1"))
        return driver

    def _among(self, column: Any, values: Sequence[str]) -> Any:
        """`column IN values`: one array parameter on PostgreSQL (one statement for any count)."""
        if self.postgres:
            return column == any_(literal(list(values), ARRAY(String)))
        return column.in_(values)

    async def write_lock(self) -> None:
        """On SQLite, take the database's write lock now, before reading what this transaction
        will rewrite (the driver otherwise reads outside any transaction until the first write,
        so two read-modify-write transactions could interleave). PostgreSQL locks rows instead."""
        if not self.postgres:
            await self.session.execute(
                update(ScoreRow).where(ScoreRow.workspace == "").values(version=ScoreRow.version)
            )


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _unnest_upsert(table: Table, columns: tuple[str, ...], keys: tuple[str, ...]) -> TextClause:
    """`INSERT … SELECT * FROM unnest(<an array per column>) ON CONFLICT (keys) DO UPDATE`: one
    statement for any number of rows, compiled once (a VALUES list is compiled per row count)."""
    quote = _PG.identifier_preparer.quote
    types = [f"{table.c[c].type.compile(dialect=_PG)}[]" for c in columns]
    arrays = ", ".join(f"CAST(:c{i} AS {t})" for i, t in enumerate(types))
    names = ", ".join(quote(c) for c in columns)
    updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in columns if c not in keys)
    conflict = ", ".join(quote(k) for k in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return text(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({conflict}) {action}"
    )


def _arrays(table: Table, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """One array per column; JSON documents as their text (cast to jsonb by the statement)."""
    out = {}
    for i, name in enumerate(rows[0]):
        values = [row[name] for row in rows]
        if _is_json(table, name):
            values = [orjson.dumps(v).decode() for v in values]
        out[f"c{i}"] = values
    return out


@functools.cache
def _is_json(table: Table, name: str) -> bool:
    return table.c[name].type.compile(dialect=_PG) in ("JSON", "JSONB")
