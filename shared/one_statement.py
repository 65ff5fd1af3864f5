"""Reads outside any transaction, then one statement that writes everything and commits by
itself (PostgreSQL only): two round trips where a transaction takes four or five (BEGIN, the
reads, the write, COMMIT) on a hop of a lead's path.

Each read already reads its own snapshot under READ COMMITTED, so running them outside a
transaction changes nothing they see; the write runs alone in autocommit, atomic as any
statement. What keeps it as safe as the transaction is each caller's to state: nothing may be
written before that statement (the session refuses anything but a SELECT until `writing`), and
the statement must fail whole, writing nothing, wherever the transaction would have rolled back
(a strict inbox claim, a check of what was read). The caller then does the work again the
careful way, in a transaction.
"""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.uow import PendingEvents


class WriteBeforeCommit(RuntimeError):
    """A statement other than a read before the one writing statement."""


# Set on a connection while only reads may run on it.
READS_ONLY = "leadwire_reads_only"
_guarded: weakref.WeakSet[Engine] = weakref.WeakSet()


def _reads_only(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    if conn.get_execution_options().get(READS_ONLY) and statement.lstrip()[:6].upper() != "SELECT":
        raise WriteBeforeCommit(f"only reads before the writing statement: {statement[:80]}")


def _guard(engine: Engine) -> None:
    """The check on every connection of `engine`, listening once: a listener made and removed
    for each try cost a tenth of a millisecond. Connections made before it would not see it."""
    if engine not in _guarded:
        event.listen(engine, "before_cursor_execute", _reads_only)
        _guarded.add(engine)


class OneStatement(PendingEvents):
    """The session for one try (reads only, in autocommit) and the handlers' outbox (`emit`:
    the rows go in the writing statement, published if and only if it commits). A subclass or
    the caller writes that statement once `writing` has lifted the guard."""

    _conn: Connection | None = None  # the session's connection, while open

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        if not isinstance(self._session.bind, AsyncEngine):
            raise TypeError("OneStatement needs sessions bound to an engine")
        _guard(self._session.bind.sync_engine)
        options = {"isolation_level": "AUTOCOMMIT", READS_ONLY: True}
        self._conn = (await self._session.connection(execution_options=options)).sync_connection
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.session.close()
        finally:
            self._session = self._conn = None

    def writing(self) -> None:
        """Let the next statement write: it commits on its own, so it must be the only one."""
        if self._conn is None:
            raise RuntimeError("used outside `async with`")
        self._conn.execution_options(**{READS_ONLY: False})

    async def wrote(self) -> None:
        """The writing statement committed: the relay is woken if it carried events."""
        if self._pending or self._taken:
            self._on_commit()
            await self._let_the_relay_start()
