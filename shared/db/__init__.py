"""The persistence toolkit every service uses, and the only place these things are written.

- `engine`: engines and sessions for PostgreSQL (asyncpg) and SQLite (aiosqlite).
- `base`: each service's typed declarative base (`service_metadata`).
- `types`: `UtcDateTime` (every timestamp column) and `Json`.
- `bulk`: many rows in one statement (`insert_rows`, `append_rows`, `insert_json_rows`,
  `update_json_rows`), one path per need; `defer_json_rows` and `defer_json_update` leave
  them to the statement that ends the unit of work; `json_update_sql` is their update, which
  tells the planner how many rows its JSON document holds.
- `dialect`: `insert_for`, `insert_or_ignore` and `upsert` across PostgreSQL and SQLite.
- `locks`: named advisory locks held for a transaction.
- `probes`: rows read by a list of keys, one index probe per key (`probe_each`).

Ids are made by `shared.ids`.
"""

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared.db.base import NAMING, new_base, service_metadata
from shared.db.bulk import (
    append_rows,
    defer_json_rows,
    defer_json_update,
    insert_json_rows,
    insert_rows,
    json_update_sql,
    row_bound,
    update_json_rows,
)
from shared.db.dialect import insert_for, insert_or_ignore, upsert
from shared.db.engine import create_engine, dialect_of, is_sqlite, ping, sessionmaker
from shared.db.errors import integrity_errors_as
from shared.db.locks import try_xact_lock, xact_lock
from shared.db.probes import probe_each
from shared.db.types import Json, UtcDateTime

__all__ = [
    "NAMING",
    "AsyncConnection",
    "AsyncEngine",
    "AsyncSession",
    "Json",
    "UtcDateTime",
    "append_rows",
    "create_engine",
    "defer_json_rows",
    "defer_json_update",
    "dialect_of",
    "insert_for",
    "insert_json_rows",
    "insert_or_ignore",
    "insert_rows",
    "integrity_errors_as",
    "is_sqlite",
    "json_update_sql",
    "new_base",
    "ping",
    "probe_each",
    "row_bound",
    "service_metadata",
    "sessionmaker",
    "try_xact_lock",
    "update_json_rows",
    "upsert",
    "xact_lock",
]
