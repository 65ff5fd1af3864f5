"""Idempotent consumers: processed event ids recorded in the same transaction as the effect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import UtcDateTime, insert_for, insert_rows
from shared.db.bulk import Deferred, fetch_after_inserts


class AlreadyHandled(Exception):
    """A claim made at commit found events its consumer had handled before (a redelivery):
    the transaction was rolled back, and the caller claims first instead."""


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("processed_at", UtcDateTime, nullable=False),
    )


async def claim(session: AsyncSession, table: Table, consumer: str, event_id: str) -> bool:
    """Record that `consumer` handles `event_id`; False when it already did (a redelivery).

    On PostgreSQL a concurrent claim of the same id waits for the first transaction and then
    finds the row, so two replicas never both apply one event.
    """
    return event_id in await claim_many(session, table, consumer, [event_id])


async def claim_many(
    session: AsyncSession, table: Table, consumer: str, event_ids: Sequence[str]
) -> set[str]:
    """Record a polled batch of event ids at once; returns the ids seen for the first time."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    now = datetime.now(UTC)
    if session.get_bind().dialect.name == "postgresql":
        claimed = await session.execute(
            _claim_statement(table.name), {"consumer": consumer, "now": now, "ids": ids}
        )
        return set(claimed.scalars())
    stmt = (
        insert_for(session, table)
        .values([{"consumer": consumer, "event_id": i, "processed_at": now} for i in ids])
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    )
    return set((await session.execute(stmt)).scalars())


@cache
def _claim_statement(table: str) -> TextClause:
    """One array parameter instead of a VALUES list compiled afresh for every batch size;
    built once per table (a `text()` parses its parameters on every construction)."""
    return text(claim_sql(table, ":consumer", ":now", ":ids"))


def claim_sql(
    table: str, consumer: str, at: str, ids: str, strict: bool = False, where: str = ""
) -> str:
    """PostgreSQL: the inbox insert of a batch of event ids (an array), returning the ids
    claimed now; its three parameters are named by the caller (`:name` or `$n`). Strict, an
    id claimed before fails the whole statement: for a statement that commits by itself,
    which must write nothing then. Otherwise that id is passed over. `where`, a condition
    on the ids inserted (`e`), lets such a statement check what else it must hold."""
    conflict = "" if strict else " ON CONFLICT DO NOTHING"
    condition = f" WHERE {where}" if where else ""
    return (
        f"INSERT INTO {table} (consumer, event_id, processed_at)"
        f" SELECT CAST({consumer} AS varchar), e, CAST({at} AS timestamptz)"
        f" FROM unnest(CAST({ids} AS varchar[])) AS e{condition}{conflict} RETURNING event_id"
    )


async def claim_with_writes(
    session: AsyncSession,
    table: Table,
    consumer: str,
    event_ids: Sequence[str],
    writes: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
    deferred: Sequence[Deferred] = (),
) -> set[str]:
    """`claim_many` at the end of a transaction, with the rows of `writes` inserted by the
    same statement on PostgreSQL (the outbox's): a consumer's transaction is then its
    handler's statements and this one, with no round trip before the work for its inbox.
    `deferred` (PostgreSQL only) are the handler's inserts left for this statement."""
    ids = list(dict.fromkeys(event_ids))
    if session.get_bind().dialect.name != "postgresql":
        for target, rows in writes:
            await insert_rows(session, target, rows)
        return await claim_many(session, table, consumer, ids)
    if not ids:
        await fetch_after_inserts(session, writes, lambda _: "SELECT 1", deferred=deferred)
        return set()
    quoted = session.get_bind().dialect.identifier_preparer.quote(table.name)

    def claim(offset: int) -> str:
        return claim_sql(quoted, f"${offset + 1}", f"${offset + 2}", f"${offset + 3}")

    rows = await fetch_after_inserts(
        session, writes, claim, consumer, datetime.now(UTC), ids, deferred=deferred
    )
    return {row[0] for row in rows}
