"""Which failures mean "a dependency is down, wait" and which mean "this work is bad"."""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from sqlalchemy import exc as sa

from shared.errors import NotFound
from shared.transient import is_transient


def wrapped(orig: BaseException, **kwargs: bool) -> sa.DBAPIError:
    return sa.DBAPIError("SELECT 1", {}, orig, **kwargs)  # type: ignore[arg-type]


class Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        wrapped(Sqlstate("40001")),
        wrapped(Exception("server closed the connection"), connection_invalidated=True),
        sa.InterfaceError("SELECT 1", {}, Exception("closed")),
        sa.TimeoutError("QueuePool limit reached"),
        sa.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")),
        KafkaConnectionError("no broker"),
        NotLeaderForPartitionError(),
    ],
    ids=repr,
)
def test_an_unavailable_dependency_is_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad payload"),
        KeyError("bug"),
        NotFound("no such contact"),
        FileNotFoundError("template"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.NumericValueOutOfRangeError("integer out of range"),
        wrapped(Sqlstate("22003")),
        sa.IntegrityError("INSERT", {}, Exception("duplicate key")),
        sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: contacts")),
        MessageSizeTooLargeError(),
    ],
    ids=repr,
)
def test_a_failure_of_the_work_itself_is_not(error: Exception) -> None:
    assert not is_transient(error)


def test_a_cause_anywhere_in_the_chain_counts() -> None:
    outer = RuntimeError("could not load the form")
    outer.__cause__ = ConnectionRefusedError(111, "refused")
    assert is_transient(outer)
    assert not is_transient(RuntimeError("could not load the form"))
