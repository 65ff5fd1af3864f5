"""Advisory locks: one replica at a time does a piece of work, held until the transaction ends.

A lock is named (`leadwire-outbox-contacts`); PostgreSQL's `hashtext` turns the name into the
lock key, so every replica (and `psql`, when an operator looks at `pg_locks`) computes the same
one. SQLite is the single-process embedded mode, where the database's own write lock already
serialises writers: there the lock is always granted.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db.engine import dialect_of

# Built once: a `text()` parses its parameters on every construction.
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext(:name))")
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:name))")


async def try_xact_lock(bind: AsyncSession | AsyncConnection, name: str) -> bool:
    """Take the lock for this transaction if it is free; False when another holds it."""
    if dialect_of(bind) != "postgresql":
        return True
    got = await bind.scalar(_TRY_LOCK, {"name": name})
    return bool(got)


async def xact_lock(bind: AsyncSession | AsyncConnection, name: str) -> None:
    """Wait for the lock and hold it until this transaction ends."""
    if dialect_of(bind) == "postgresql":
        await bind.execute(_LOCK, {"name": name})
