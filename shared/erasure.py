"""Erasure markers: what a service keeps of a person it erased, so old data cannot bring them back.

When a contact is erased (`contact.deleted`), every service deletes what it holds on the person
and keeps only one row per identity the person was known by: a digest of the workspace and the
identity (`email:ann@example.com`, `phone:+442079460018`, the form of ingest's dedupe keys)
with the moment of erasure. The digest names nobody by itself; it lets a service recognise the
same person in *old* data replayed later (a quarantined submission released, a dead letter
replayed, retained outbox rows re-published, a consumer re-reading a topic from the start)
and drop it. Data captured after the erasure is a new, consented capture and goes through.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

# The pure half (identities, digests, the replay rule) lives in shared.identity, importable by
# domain modules; it is re-exported here for the services' I/O side.
from shared.identity import digests as digests
from shared.identity import email_identity as email_identity
from shared.identity import identities as identities
from shared.identity import identity_digest as identity_digest
from shared.identity import phone_identity as phone_identity
from shared.identity import replayed_after_erasure as replayed_after_erasure


def erasure_table(metadata: MetaData) -> Table:
    return Table(
        "erasures",
        metadata,
        Column("workspace", String(63), primary_key=True),
        Column("digest", String(64), primary_key=True),
        Column("erased_at", DateTime(timezone=True), nullable=False),
    )


async def record_erasures(
    session: AsyncSession, table: Table, workspace: str, found: Iterable[str], at: datetime
) -> None:
    """Remember that the people with these digests were erased at `at` (the latest wins)."""
    rows = [{"workspace": workspace, "digest": d, "erased_at": at} for d in sorted(set(found))]
    if not rows:
        return
    postgres = session.get_bind().dialect.name == "postgresql"
    insert_ = postgresql.insert if postgres else sqlite.insert
    stmt = insert_(table).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.workspace, table.c.digest],
        set_={"erased_at": stmt.excluded.erased_at},
    )
    await session.execute(stmt)


async def erased_at(
    session: AsyncSession, table: Table, workspace: str, found: Iterable[str]
) -> dict[str, datetime]:
    """When each of these digests was erased (absent: never)."""
    wanted = sorted(set(found))
    if not wanted:
        return {}
    rows = await session.execute(
        select(table.c.digest, table.c.erased_at).where(
            table.c.workspace == workspace, table.c.digest.in_(wanted)
        )
    )
    return {row.digest: row.erased_at for row in rows}


async def checkpoint(engine: AsyncEngine) -> None:
    """After an erasure commits on SQLite: copy the write-ahead log into the database file and
    truncate it, so the deleted rows' old pages do not linger in the `-wal` file (the file
    itself overwrites deleted content: `secure_delete`). Nothing to do on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
