"""Database engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), chosen by DATABASE_URL.

Each service owns its tables: on PostgreSQL they live in the service's own schema (set as the
connection's search_path), on SQLite in the service's own file.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def dialect_of(bind: AsyncSession | AsyncConnection | AsyncEngine) -> str:
    """`postgresql` or `sqlite`: the dialect a session, connection or engine talks."""
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name
    return bind.dialect.name


# How PostgreSQL plans the services' prepared statements (its `plan_cache_mode`).
PlanCacheMode = Literal["force_generic_plan", "auto", "force_custom_plan"]
GENERIC_PLANS: PlanCacheMode = "force_generic_plan"


def create_engine(
    url: str,
    schema: str | None = None,
    plan_cache_mode: PlanCacheMode = GENERIC_PLANS,
    **kwargs: Any,
) -> AsyncEngine:
    """An engine for `url`; on PostgreSQL, connections use `schema` as their search_path and
    plan prepared statements the `plan_cache_mode` way.

    Generic plans by default: under PostgreSQL's `auto`, a statement's plan is made again on
    every execution for as long as a generic plan looks dearer than the custom ones it made
    (the relays' reads, contacts' capture read, notifier's inbox claim never stopped doing
    so). Those statements are short: planning took 0.2-0.65 ms where running them took 0.06-0.2,
    and at 20 leads/s it was a third of the server's statement time. A generic plan is made
    once per connection and statement, and made again when the tables' statistics change
    (the statistics keeper's ANALYZE). Every statement on a lead's path reads or writes by
    key or by id range; `auto` remains for an operator whose data needs value-specific plans.
    """
    # orjson for JSON columns: several times faster than the json module on hot write paths.
    kwargs.setdefault("json_serializer", lambda value: orjson.dumps(value).decode())
    kwargs.setdefault("json_deserializer", orjson.loads)
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            _create_private(Path(path))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    server_settings: dict[str, str] = {"plan_cache_mode": plan_cache_mode}
    if schema:
        server_settings["search_path"] = schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # No ping before each checkout: it cost a round trip and 200-450 µs of CPU on every
    # transaction, a fifth of a small one. A connection that died with the server fails its
    # first statement instead; SQLAlchemy then invalidates the whole pool, consumers retry
    # (shared.transient) and a request answers 503 once. Recycling bounds how long an idle
    # connection is trusted (a firewall or proxy may have dropped it).
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_recycle", 300)
    engine = create_async_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine.sync_engine, "do_connect", _missing_socket_is_refused)
    return engine


def _missing_socket_is_refused(dialect: Any, _: Any, cargs: Any, cparams: Any) -> Any:
    """Connect; a server reached over its Unix socket that is not running has no socket file,
    and the connect fails with FileNotFoundError, which says "bad work" (`shared.transient`).
    It is said as TCP says it instead, so consumers wait for the database and requests get a
    503, as when a server over TCP is down."""
    try:
        return dialect.connect(*cargs, **cparams)
    except FileNotFoundError as exc:
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"no server at its socket: {exc}") from exc


def _create_private(path: Path) -> None:
    """Create the SQLite file owner-only (0600): it holds people's data. SQLite gives its
    `-wal` and `-shm` files the mode of the database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout waits instead of failing on a lock.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows (an erased person) are overwritten with zeros, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
