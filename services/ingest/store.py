"""ingest's repository and units of work: the only module that builds queries, including the
group commit of the public form endpoint (a batched unit of work)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.ingest.models import (
    Form,
    IdempotencyKey,
    Submission,
    WebhookMessage,
    WebhookSource,
    erasures,
    outbox,
)
from shared import erasure, tracing
from shared.db import append_rows, insert_rows
from shared.events.envelope import Envelope
from shared.uow import StoreTransaction, UnitOfWork, outbox_row

QUARANTINED = ("rejected", "spam")
SUBMISSIONS = Submission.metadata.tables["submissions"]


class KeyTaken(Exception):
    """A concurrent request stored the same idempotency key first."""


class IngestStore:
    """Forms, webhook sources, submissions and idempotency keys, inside one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # forms ------------------------------------------------------------------------------------

    async def add_form(self, form: Form) -> None:
        self.session.add(form)
        await self.session.flush()

    async def form(self, form_id: str, workspace: str | None = None) -> Form | None:
        """A live form by id; with `workspace`, only if it belongs there."""
        query = select(Form).where(Form.id == form_id, Form.deleted_at.is_(None))
        if workspace is not None:
            query = query.where(Form.workspace == workspace)
        result: Form | None = await self.session.scalar(query)
        return result

    async def forms(self, workspace: str, limit: int, after: str | None) -> Sequence[Form]:
        query = select(Form).where(Form.workspace == workspace, Form.deleted_at.is_(None))
        if after is not None:
            query = query.where(Form.id > after)
        return (await self.session.scalars(query.order_by(Form.id).limit(limit))).all()

    # webhook sources --------------------------------------------------------------------------

    async def add_webhook_source(self, source: WebhookSource) -> None:
        self.session.add(source)
        await self.session.flush()

    async def webhook_source(
        self, source_id: str, workspace: str | None = None
    ) -> WebhookSource | None:
        query = select(WebhookSource).where(
            WebhookSource.id == source_id, WebhookSource.deleted_at.is_(None)
        )
        if workspace is not None:
            query = query.where(WebhookSource.workspace == workspace)
        result: WebhookSource | None = await self.session.scalar(query)
        return result

    async def webhook_sources(self, workspace: str) -> Sequence[WebhookSource]:
        query = (
            select(WebhookSource)
            .where(WebhookSource.workspace == workspace, WebhookSource.deleted_at.is_(None))
            .order_by(WebhookSource.id)
        )
        return (await self.session.scalars(query)).all()

    async def remember_webhook_message(self, source_id: str, message_id: str, at: datetime) -> bool:
        """Record a webhook-id; False when this source already sent it (a replay)."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert_(WebhookMessage)
            .values(source_id=source_id, message_id=message_id, received_at=at)
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def forget_webhook_messages(self, before: datetime) -> None:
        await self.session.execute(
            delete(WebhookMessage).where(WebhookMessage.received_at < before)
        )

    # submissions ------------------------------------------------------------------------------

    async def add_submissions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert raw submissions with their outcomes (the table, not the mapped class: no ORM
        bulk-insert machinery). The public form route's group commit appends them directly."""
        await insert_rows(self.session, SUBMISSIONS, rows)

    async def submission(self, workspace: str, submission_id: str) -> Submission | None:
        query = select(Submission).where(
            Submission.id == submission_id, Submission.workspace == workspace
        )
        result: Submission | None = await self.session.scalar(query.with_for_update())
        return result

    async def quarantine(
        self,
        workspace: str,
        limit: int,
        reason: str | None = None,
        source: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> Sequence[Submission]:
        """Rejected and spam submissions not yet released, newest first."""
        query = select(Submission).where(
            Submission.workspace == workspace, Submission.status.in_(QUARANTINED)
        )
        if reason is not None:
            query = query.where(Submission.reason == reason)
        if source is not None:
            query = query.where(Submission.source == source)
        if before is not None:
            at, last_id = before
            query = query.where(
                (Submission.created_at < at)
                | ((Submission.created_at == at) & (Submission.id < last_id))
            )
        query = query.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit)
        return (await self.session.scalars(query)).all()

    async def mark_submission(
        self,
        submission_id: str,
        status: str,
        *,
        errors: list[dict[str, str]] | None = None,
        dedupe_key: str | None = None,
        released_at: datetime | None = None,
    ) -> None:
        await self.session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(status=status, errors=errors, dedupe_key=dedupe_key, released_at=released_at)
        )

    # idempotency keys -------------------------------------------------------------------------

    async def idempotency_key(self, workspace: str, key: str) -> IdempotencyKey | None:
        result: IdempotencyKey | None = await self.session.get(IdempotencyKey, (workspace, key))
        return result

    async def save_idempotency_key(self, row: IdempotencyKey) -> None:
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise KeyTaken(row.key) from exc

    async def drop_idempotency_key(self, row: IdempotencyKey) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def forget_idempotency_keys(self, before: datetime) -> None:
        await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))

    # erasure -----------------------------------------------------------------------------------

    async def record_erasures(self, workspace: str, digests: list[str], at: datetime) -> None:
        await erasure.record_erasures(self.session, erasures, workspace, digests, at)

    async def erasures(self, workspace: str, digests: Sequence[str]) -> dict[str, datetime]:
        return await erasure.erased_at(self.session, erasures, workspace, digests)

    async def person_submissions(
        self, workspace: str, digests: Sequence[str], submission_ids: Sequence[str]
    ) -> Sequence[Submission]:
        """The submissions naming these digests or with these ids, oldest first."""
        named = (
            Submission.email_digest.in_(digests)
            | Submission.phone_digest.in_(digests)
            | Submission.id.in_(submission_ids)
        )
        query = (
            select(Submission)
            .where(Submission.workspace == workspace, named)
            .order_by(Submission.created_at, Submission.id)
        )
        return (await self.session.scalars(query)).all()

    async def delete_person_submissions(
        self, workspace: str, digests: Sequence[str], submission_ids: Sequence[str]
    ) -> list[str]:
        """Delete the submissions naming these digests or with these ids; their ids."""
        named = (
            Submission.email_digest.in_(digests)
            | Submission.phone_digest.in_(digests)
            | Submission.id.in_(submission_ids)
        )
        ids = list(
            (
                await self.session.scalars(
                    select(Submission.id).where(Submission.workspace == workspace, named)
                )
            ).all()
        )
        if ids:
            await self.session.execute(delete(Submission).where(Submission.id.in_(ids)))
        return ids

    async def idempotency_records(self, workspace: str) -> Sequence[IdempotencyKey]:
        """The workspace's stored answers (kept 24 h, so a bounded set)."""
        query = select(IdempotencyKey).where(IdempotencyKey.workspace == workspace)
        return (await self.session.scalars(query)).all()

    async def delete_idempotency_records(self, workspace: str, keys: Sequence[str]) -> None:
        if keys:
            await self.session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.workspace == workspace, IdempotencyKey.key.in_(keys)
                )
            )

    async def outbox_keys(self, workspace: str) -> Sequence[tuple[int, str]]:
        """Ids and keys of the workspace's outbox rows, unsent or kept for re-publishing."""
        rows = await self.session.execute(
            select(outbox.c.id, outbox.c.key).where(outbox.c.key.startswith(f"{workspace}:"))
        )
        return [(int(row_id), str(key)) for row_id, key in rows]

    async def outbox_events(self, ids: Sequence[int]) -> Sequence[tuple[str, bytes, bool]]:
        """Topic, event and whether it was published, of these outbox rows."""
        if not ids:
            return []
        rows = await self.session.execute(
            select(outbox.c.topic, outbox.c.payload, outbox.c.sent_at)
            .where(outbox.c.id.in_(ids))
            .order_by(outbox.c.id)
        )
        return [(str(topic), bytes(payload), sent is not None) for topic, payload, sent in rows]

    async def delete_outbox_rows(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(delete(outbox).where(outbox.c.id.in_(ids)))


@asynccontextmanager
async def transaction(uow: UnitOfWork) -> AsyncIterator[StoreTransaction[IngestStore]]:
    """`async with transaction(ctx.uow()) as tx:` commits on success, rolls back on error; the
    use cases see `tx.store` (this repository) and `tx.emit` (the outbox)."""
    async with uow:
        yield uow.with_store(IngestStore)


def over(uow: UnitOfWork) -> StoreTransaction[IngestStore]:
    """An already open unit of work (a consumer's) as the use cases see it."""
    return uow.with_store(IngestStore)


# --- group commit ---------------------------------------------------------------------------


class Traced(Protocol):
    """A post that carries the trace of the request it came in with."""

    @property
    def traceparent(self) -> str | None: ...


class Appends(Protocol):
    """What a batch of posts appends: submission rows and the events for the outbox."""

    @property
    def rows(self) -> list[dict[str, Any]]: ...

    @property
    def events(self) -> list[tuple[str, str, Envelope]]: ...


P = TypeVar("P", bound=Traced)
Out = TypeVar("Out")


class GroupCommit(Generic[P, Out]):
    """A batched unit of work: posts arriving together share a transaction.

    Each caller of `submit` still waits for the commit holding its submission row and its
    outbox event before it is answered, so nothing is acknowledged before it is durable. A
    failed batch is retried one post at a time through an ordinary unit of work, so one bad
    row cannot fail its neighbours.

    One writer gathers at a time; when only a few posts are waiting it lingers `linger_s` for
    more. Below saturation that keeps transactions from carrying one post each, whose fixed
    cost (session, BEGIN, two inserts, COMMIT) otherwise dominates the process's CPU. The
    writers are background loops (`loops()`), started and cancelled with the service.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        uows: Callable[[], UnitOfWork],
        on_commit: Callable[[], None],
        judge: Callable[[Sequence[P]], tuple[list[Out], Appends]],
        one_by_one: Callable[[Sequence[P], StoreTransaction[IngestStore]], Awaitable[list[Out]]],
        writers: int = 4,
        max_batch: int = 200,
        linger_s: float = 0.004,
        enough: int = 16,
    ) -> None:
        self.engine = engine
        self.uows = uows
        self.on_commit = on_commit
        self.judge = judge
        self.one_by_one = one_by_one
        self.writers = writers
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.enough = enough
        self.gathering = asyncio.Lock()
        self.queue: asyncio.Queue[tuple[P, asyncio.Future[Out]]] = asyncio.Queue()

    async def submit(self, post: P) -> Out:
        """The post's outcome, once the transaction holding it committed."""
        done: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((post, done))
        return await done

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The writers, for the service to run for as long as it runs."""
        return [self._run] * self.writers

    async def _run(self) -> None:
        # Each writer keeps one connection between batches, so a transaction costs no pool
        # checkout (and no pre-ping round trip). A failed batch gives the connection up, as it
        # may be broken; its posts are retried one at a time through the pool (pre-pinged).
        conn: AsyncConnection | None = None
        try:
            while True:
                batch = await self._gather()
                try:
                    if conn is None:
                        conn = await self.engine.connect()
                    await self._write_on(conn, batch)
                except Exception:
                    if conn is not None:
                        await _discard(conn)
                        conn = None
                    for item in batch:
                        await self._write([item])
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _gather(self) -> list[tuple[P, asyncio.Future[Out]]]:
        async with self.gathering:
            batch = [await self.queue.get()]
            if self.linger_s and self.queue.qsize() < self.enough:
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
        return batch

    async def _write_on(
        self, conn: AsyncConnection, batch: list[tuple[P, asyncio.Future[Out]]]
    ) -> None:
        """The batch in one transaction on the writer's own connection; raises on failure.

        Only inserts (submissions and their outbox rows), so it goes through `append_rows`
        rather than a unit of work: the ORM session's cost per transaction was a third of a
        submission's CPU time at 1,000 posts/s, when batches are small."""
        outcomes, appends = self.judge([p for p, _ in batch])
        # One transaction for many requests' leads: a span of its own, linked to each request.
        with tracing.tracer().start_as_current_span(
            "outbox write", links=tracing.links([p.traceparent for p, _ in batch])
        ):
            await append_rows(
                conn,
                [(SUBMISSIONS, appends.rows), (outbox, [outbox_row(*e) for e in appends.events])],
            )
        if appends.events:
            self.on_commit()
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)

    async def _write(self, batch: list[tuple[P, asyncio.Future[Out]]]) -> None:
        try:
            async with transaction(self.uows()) as tx:
                outcomes = await self.one_by_one([p for p, _ in batch], tx)
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._write([item])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
