"""Which failures are the infrastructure's (wait and retry) and which are the work's (poison).

A consumer keeps an event through any outage of its database or broker and only dead-letters
what the same event would fail on again; an HTTP route answers 503 with `Retry-After` instead
of 500. Both ask `is_transient`.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from sqlalchemy import exc as sa

# SQLSTATEs of a server that is unreachable, restarting, overloaded or asking for a retry:
# class 08 (connection exception), 53 (insufficient resources: too many connections, disk
# full), 57P01-57P03 (admin/crash shutdown, cannot connect now), 40001/40P01 (serialization
# failure, deadlock: retry the transaction), 55P03 (lock not available), 57014 (statement
# timeout or cancel).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "55P03", "57014"})
# SQLite reports a busy or locked file (another writer) as an OperationalError, as it does a
# missing table; only the former passes.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy", "disk i/o error")


def is_transient(exc: BaseException) -> bool:
    """True if `exc`, or anything that caused it, says a dependency is unavailable for now."""
    return any(_transient_itself(e) for e in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, sa.DBAPIError) and isinstance(current.orig, BaseException):
            yield current.orig
        current = current.__cause__ or current.__context__


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        message = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and any(
            m in message for m in _SQLITE_TRANSIENT
        )
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.DisconnectionError | sa.TimeoutError | sa.InterfaceError):
        return True  # pool exhausted, connection closed under us
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    if isinstance(exc, asyncpg.InterfaceError):  # "connection is closed" and the like
        return True
    # Refused, reset, timed out, name not resolved; a plain OSError is what a connect to
    # several addresses raises. Its file-system subclasses (FileNotFoundError…) are not.
    return isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or type(exc) is OSError
