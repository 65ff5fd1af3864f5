"""Insert-or-ignore and upsert: the one place that switches between PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db.engine import dialect_of

Bind = AsyncSession | AsyncConnection


def insert_for(bind: Bind, target: Any) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT (with `on_conflict_do_nothing` / `on_conflict_do_update`)."""
    if dialect_of(bind) == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


async def insert_or_ignore(
    bind: Bind, target: Any, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]
) -> int:
    """Insert the rows whose key does not exist yet; returns how many were inserted."""
    if not rows:
        return 0
    params = [dict(rows)] if isinstance(rows, Mapping) else [dict(r) for r in rows]
    table: Table = target if isinstance(target, Table) else target.__table__
    # RETURNING counts what was inserted (an executemany's rowcount is not reliable).
    stmt = (
        insert_for(bind, target)
        .values(params)
        .on_conflict_do_nothing()
        .returning(*table.primary_key.columns)
    )
    return len((await bind.execute(stmt)).all())


async def upsert(
    bind: Bind,
    target: Any,
    row: Mapping[str, Any],
    key: Sequence[str],
    update: Sequence[str] | None = None,
) -> None:
    """Insert `row`, or set its `update` columns (default: every non-key column) on the row
    that already holds the same `key` columns."""
    stmt = insert_for(bind, target).values(dict(row))
    columns = [c for c in row if c not in key] if update is None else list(update)
    if not columns:
        await bind.execute(stmt.on_conflict_do_nothing(index_elements=list(key)))
        return
    excluded = stmt.excluded
    await bind.execute(
        stmt.on_conflict_do_update(index_elements=list(key), set_={c: excluded[c] for c in columns})
    )
