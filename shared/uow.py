"""Unit of work: one transaction for a state change and the events it implies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import insert_rows
from shared.db.bulk import fetch_after_inserts, take_deferred
from shared.events.envelope import Envelope
from shared.inbox import AlreadyHandled, claim, claim_many, claim_with_writes
from shared.tracing import traceparent_for, tracer

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Transaction(Protocol[R_co]):
    """What a use case sees of a unit of work: its service's repository and the outbox.

    Handlers are typed `tx: Transaction[ContactsRepository]` (a Protocol of the service's
    store), so a test hands them an in-memory fake of both; the doors (api, consumers) open a
    `UnitOfWork` and pass `uow.with_store(ContactsStore)`.
    """

    @property
    def store(self) -> R_co: ...

    def emit(self, topic: str, key: str, envelope: Envelope) -> None:
        """Publish `envelope` if and only if this transaction commits."""
        ...


class PendingEvents:
    """A session opened by `async with` and the outbox rows of the events emitted meanwhile,
    queued until the commit writes them: what a unit of work and a one-statement write
    (`shared.one_statement`) share."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        inbox: Table,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._inbox = inbox
        self._on_commit = on_commit
        self._session: AsyncSession | None = None
        self._pending: list[dict[str, object]] = []
        self._taken = False  # some rows were handed to the caller to write (`take_pending`)
        self._claim: tuple[str, list[str]] | None = None  # see `claim_at_commit`

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} used outside `async with`")
        return self._session

    def emit(self, topic: str, key: str, envelope: Envelope) -> None:
        """Queue an event for publication when (and only if) this transaction commits."""
        if envelope.traceparent is None:
            envelope.traceparent = traceparent_for(envelope.correlationid)
        self._pending.append(outbox_row(topic, key, envelope))

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        """Queue an event already encoded to the bytes `Envelope.to_bytes()` gives (trace
        context included), for hot paths that build many events without envelope objects."""
        self._pending.append(
            {
                "topic": topic,
                "key": key,
                "event_id": event_id,
                "payload": payload,
                "created_at": datetime.now(UTC),
            }
        )

    def claim_at_commit(self, consumer: str, event_ids: Sequence[str]) -> None:
        """Inbox check made optimistically: record `event_ids` as handled by `consumer` in
        the commit's own statement (with the outbox rows), not in a round trip before the
        work. Redeliveries are rare; when one is among them, the commit raises
        `AlreadyHandled` and nothing of the transaction is kept: the caller then claims
        first (`first_times`) and handles only the events it had not."""
        self._claim = (consumer, list(dict.fromkeys(event_ids)))

    def take_claim(self) -> tuple[str, list[str]] | None:
        """Hand over the claim `claim_at_commit` made (consumer, event ids) to a caller that
        writes it in a statement of its own in this transaction, as `take_pending` hands over
        the outbox rows; the caller raises `AlreadyHandled` if an id was claimed before. The
        commit then claims nothing itself."""
        claim, self._claim = self._claim, None
        return claim

    def take_pending(self) -> list[dict[str, object]]:
        """Hand over the outbox rows queued so far (in order) to a caller that writes them
        into `outbox` itself, in a statement of its own in this transaction: a round trip
        fewer for a hot path that writes its state in one statement anyway. The relay is
        still woken when the transaction commits."""
        rows, self._pending = self._pending, []
        self._taken = self._taken or bool(rows)
        return rows

    async def _let_the_relay_start(self) -> None:
        """Yield once, the last step of a commit that carried events and woke the relay, so
        that it sends its read before this task goes on with its own work after the commit.
        Idle, that work came first and held each hop's publish back 0.2-0.5 ms. (Last, so
        that a cancellation meeting the yield finds the commit's work all done.)"""
        await asyncio.sleep(0)


class UnitOfWork(PendingEvents):
    """`async with uow:` commits on success and rolls back on error; handlers never commit.

    `emit()` writes an outbox row in the same transaction, so an event is published if and
    only if the state change it describes was committed.
    """

    _after_commit: list[Callable[[], None]]  # set afresh by `__aenter__`, as the others

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        await self._session.begin()
        self._pending = []
        self._taken = False
        self._claim = None
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        committed = False
        carried = bool(self._pending or self._taken)  # events, for the relay
        try:
            if exc_type is None:
                if carried:
                    with tracer().start_as_current_span("outbox write") as span:
                        span.set_attribute("leadwire.outbox.rows", len(self._pending))
                        await self._write_at_commit(session)
                        await session.commit()
                    self._on_commit()
                else:
                    await self._write_at_commit(session)
                    await session.commit()
                committed = True
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None
        if committed:
            for callback in self._after_commit:
                callback()
            if carried:
                await self._let_the_relay_start()

    async def _write_at_commit(self, session: AsyncSession) -> None:
        """The outbox rows, the inbox claim made at commit and the inserts deferred to it
        (`shared.db.defer_json_rows`), one statement on PostgreSQL;
        raises `AlreadyHandled` (the caller's `finally` rolls back) if the claim finds an
        event handled before."""
        deferred = take_deferred(session)
        if self._claim is None:
            if deferred:
                writes = [(self._outbox, self._pending)]
                await fetch_after_inserts(session, writes, lambda _: "SELECT 1", deferred=deferred)
            else:
                await insert_rows(session, self._outbox, self._pending)
            return
        consumer, ids = self._claim
        claimed = await claim_with_writes(
            session, self._inbox, consumer, ids, [(self._outbox, self._pending)], deferred
        )
        if len(claimed) < len(ids):
            raise AlreadyHandled(f"{consumer}: {len(ids) - len(claimed)} event(s) seen before")

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction has committed (never if it rolls back): to
        tell another task of rows it can now see."""
        self._after_commit.append(callback)

    def with_store(self, make: Callable[[AsyncSession], R]) -> StoreTransaction[R]:
        """This transaction as a handler sees it: the service's repository over its session."""
        return StoreTransaction(self, make(self.session))

    async def first_times(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Inbox check for a batch: the ids `consumer` sees for the first time (recorded here)."""
        return await claim_many(self.session, self._inbox, consumer, event_ids)

    async def first_time(self, consumer: str, event_id: str) -> bool:
        """Inbox check: True the first time `consumer` sees `event_id` (recorded in this tx)."""
        return await claim(self.session, self._inbox, consumer, event_id)


@dataclass(frozen=True)
class StoreTransaction(Generic[R]):
    """A `Transaction`: an open unit of work and the repository over its session."""

    uow: UnitOfWork
    store: R

    def emit(self, topic: str, key: str, envelope: Envelope) -> None:
        self.uow.emit(topic, key, envelope)


def outbox_row(topic: str, key: str, envelope: Envelope) -> dict[str, object]:
    """The outbox row of an event: written in the transaction of the change it describes."""
    return {
        "topic": topic,
        "key": key,
        "event_id": envelope.id,
        "payload": envelope.to_bytes(),
        "created_at": datetime.now(UTC),
    }
