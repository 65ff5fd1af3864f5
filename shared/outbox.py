"""Transactional outbox: events are rows written with the state change, published by a relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared import metrics
from shared.bus.base import Bus
from shared.db import UtcDateTime, dialect_of, sessionmaker, try_xact_lock
from shared.outbox_spans import ReadSpans
from shared.tracing import publish_spans
from shared.waits import wait_at_most

log = logging.getLogger(__name__)
# How long published rows are kept: long enough to re-publish after a volatile bus restarts.
SENT_RETENTION = timedelta(days=1)
# An idle relay's longest wait between polls (see `OutboxRelay._poll_interval`).
IDLE_POLL_MAX_S = 1.0
# How soon a relay that found another replica publishing tries again.
LOCK_RETRY_S = 0.02
# How often a relay on PostgreSQL reads every id below its tail once more (`OutboxRelay`).
SWEEP_EVERY_S = 1.0
# How often a relay on PostgreSQL draining a backlog counts the rows left (readiness, metrics).
COUNT_EVERY_S = 1.0
# The relay keeps one pooled connection between its rounds on PostgreSQL (a checkout and its
# return cost 0.11-0.15 ms of CPU, as much as the round's read) and takes a fresh one after
# this long, so none is trusted longer than the pool trusts its others.
HOLD_CONNECTION_S = 60.0


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(400), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("sent_at", UtcDateTime, nullable=True, index=True),
    )


# The services whose rows were re-published on each volatile bus (see `_republish_recent`).
_REPUBLISHED: weakref.WeakKeyDictionary[Bus, set[str]] = weakref.WeakKeyDictionary()


def _first_relay_on_volatile_bus(bus: Bus, service: str) -> bool:
    """True once per service and volatile bus: a new in-process bus starts empty, so what it
    carried before (in an earlier process) is gone; a durable bus (Kafka) keeps it all."""
    if bus.durable:
        return False
    done = _REPUBLISHED.setdefault(bus, set())
    first = service not in done
    done.add(service)
    return first


def polls_without_rows(quiet: int, sent: int, woken: bool) -> int:
    """The count of timed polls in a row that found nothing (`quiet`, which spaces the next
    poll out, see `OutboxRelay._poll_interval`) after a round that published `sent` rows.
    Only a timed poll tells whether rows wait that no commit here announced (another
    process's): a round a commit woke found that commit's rows and leaves the count as it
    was. (Counted, a lone lead's round brought the next poll back to the shortest interval,
    where it ran into the next lead's commit.)"""
    if woken:
        return quiet
    return 0 if sent else quiet + 1


class OutboxRelay:
    """Publishes unsent outbox rows in id order, then deletes them (durable bus) or marks them
    sent (volatile bus).

    Several replicas may run a relay: a PostgreSQL advisory lock lets one publish at a time, so
    per-key order is kept. A crash between publish and mark re-publishes; consumers' inboxes
    absorb the duplicate. Kafka keeps the log, so published rows go at once: deleting a row
    writes a few bytes where marking it rewrote the whole row, its event included, and its
    index entries. The in-process bus forgets everything with the process, so there published
    rows are kept a day, to be re-published after a restart.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        bus: Bus,
        service: str,
        poll_interval_s: float = 0.2,
        batch: int = 500,
        linger_s: float = 0.02,
        sweep_every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.engine = engine
        self.table = table
        self.bus = bus
        self.service = service
        self.poll_interval_s = poll_interval_s
        self.batch = batch
        self.linger_s = linger_s
        self.sessions = sessionmaker(engine)
        self.keep_sent = not bus.durable
        self._wake = asyncio.Event()
        # Between rounds, waiting for a commit's notification or the next poll (`_sleep`).
        self.resting = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_purge = datetime.now(UTC)
        # Unsent rows as last counted: grows while the bus is down (readiness reports it).
        self.backlog = 0
        self._lock = f"leadwire-outbox-{service}"
        self._lock_busy = False
        # PostgreSQL: the claim takes the relay's lock in the same statement (a round trip
        # fewer before every hop's publish) and lets the claim's commit skip waiting for the
        # WAL flush. Safe for delivery: the claim commits only after the bus acknowledged the
        # rows, and a claim lost in a database crash only publishes them again, which
        # consumers' inboxes absorb.
        self._gate = select(
            and_(
                func.pg_try_advisory_xact_lock(func.hashtext(self._lock)),
                func.set_config("synchronous_commit", "off", true()) == "off",
            )
        ).scalar_subquery()
        self._read_then_delete = engine.dialect.name == "postgresql" and not self.keep_sent
        self.spans = ReadSpans()
        # The connection the relay's own loop keeps between rounds (`_connection`).
        self._keep_connection = False
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under `_conn`
        self._conn_since = 0.0
        self.sweep_every_s = sweep_every_s
        self._next_sweep = time.monotonic() + sweep_every_s
        self._next_count = 0.0
        name = engine.dialect.identifier_preparer.quote(table.name)
        self._read_sql = (
            # A materialised CTE: the lock is tried exactly once, whatever the plan. The
            # snapshot is the statement's, the one the rows are read under.
            "WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock(hashtext($1)) AS got,"
            " pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,"
            " pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax)"
            " SELECT l.got, l.xmin, l.xmax, o.id, o.topic, o.key, o.payload FROM l"
            # Each span is an index range scan of its own (`ReadSpans`), never the dead head.
            " LEFT JOIN LATERAL (SELECT r.id, r.topic, r.key, r.payload"
            " FROM unnest($3::bigint[], $4::bigint[]) AS s(lo, hi)"
            # `(sent_at IS NULL) IS TRUE`, not `sent_at IS NULL`: the planner cannot take the
            # sent_at index for it, whose entries for every published row (all NULL) it would
            # walk; on a table too young for statistics it did.
            f" CROSS JOIN LATERAL (SELECT id, topic, key, payload FROM {name}"
            " WHERE id BETWEEN s.lo AND s.hi AND (sent_at IS NULL) IS TRUE"
            " ORDER BY id LIMIT $2) AS r"
            " WHERE l.got ORDER BY r.id LIMIT $2) AS o ON true"
        )
        # The delete also hands the round's session lock to its own transaction: it takes the
        # same lock at transaction level (granted at once, this session holds it) before it
        # releases the session's. The lock is then free only once the delete has committed, as
        # if released by a statement of its own after it, without that statement's round trip.
        self._delete_sql = (
            f"WITH gone AS (DELETE FROM {name} WHERE id = ANY($1::bigint[])),"
            " held AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext($2)))"
            " SELECT pg_advisory_unlock(hashtext($2)),"
            " set_config('synchronous_commit', 'off', true) FROM held"
        )
        self._unlock_sql = "SELECT pg_advisory_unlock(hashtext($1))"
        # The rows above the tail (those in spans are few): not the whole table, dead included.
        self._count_sql = (
            f"SELECT count(*) FROM {name} WHERE id >= $1 AND (sent_at IS NULL) IS TRUE"
        )

    def notify(self) -> None:
        """Called after a commit that wrote outbox rows, so they go out without waiting a poll."""
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.service}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let the batch in flight finish, then stop: cancelling it mid-transaction can leave
        a database driver (aiosqlite) waiting forever."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._keep_connection = False
        await self._let_go()

    async def _run(self) -> None:
        self._keep_connection = True  # given back by `stop`
        republish = _first_relay_on_volatile_bus(self.bus, self.service)
        quiet = 0  # timed polls in a row that found nothing to publish
        woken = False  # whether this round was started by a commit's notification
        while not self._stopping:
            # Cleared before the round, not after: a commit landing while this round runs
            # wakes the next one at once instead of waiting out a poll interval.
            self._wake.clear()
            try:
                if republish:
                    await self._republish_recent()
                    republish = False
                sent = await self.publish_pending()
                # Commits that landed while this round ran: a stream, not a lone lead.
                streaming = self._wake.is_set()
            except Exception:
                log.warning("outbox relay failed, will retry", exc_info=True)
                with contextlib.suppress(Exception):  # the database may be the one down
                    await self._count_backlog()
                self._wake.clear()
                await self._sleep(1)
                woken = False  # the next round is a retry, not a commit's
                continue
            if self._lock_busy:
                # Another replica is publishing; this one's rows may have missed its claim.
                await asyncio.sleep(LOCK_RETRY_S)
                continue
            quiet = polls_without_rows(quiet, sent, woken)
            if sent == 0 and self.keep_sent and not self._stopping:
                await self._purge_sent()
            woken = True
            if sent < self.batch:
                woken = await self._sleep(self._poll_interval(quiet))
                # Commits kept landing while the last round published: let a few more land,
                # so that under a steady stream of small transactions one round (lock, read,
                # publish, delete) carries many of them. A relay woken from rest publishes at
                # once, however many rows the commit wrote: a lead's every hop waits on it.
                # (Judged by rows sent, one commit of several events paid the linger on every
                # hop.) A round that found nothing was a poll that a lone commit happened to
                # land in, not a stream.
                if not self._stopping and self.linger_s and streaming and sent:
                    await asyncio.sleep(self.linger_s)

    def _poll_interval(self, quiet: int) -> float:
        """This process's commits wake the relay; polling finds only rows another process
        left (one that crashed before publishing), so an idle relay polls less and less
        often, up to IDLE_POLL_MAX_S, instead of a transaction every interval for nothing."""
        longest = max(IDLE_POLL_MAX_S, self.poll_interval_s)
        return float(min(self.poll_interval_s * 2 ** min(quiet, 8), longest))

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a commit's notification, a stop request or `seconds`: whether it was not
        `seconds` that ended the wait."""
        if self._stopping:
            return True
        self.resting = True
        try:
            woken = await wait_at_most(self._wake, seconds)
        finally:
            self.resting = False
        return woken or self._stopping

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many were published.

        On PostgreSQL with a durable bus, see `_publish_claimed`. Otherwise the rows are
        claimed first (deleted or marked sent) in a transaction that only commits once the
        bus has acknowledged them, so a failed publish leaves them unsent. The claim also takes
        SQLite's write lock, which keeps two relays on one file from publishing a row twice.
        """
        if self._read_then_delete:
            return await self._publish_claimed()
        # A Core connection, not an ORM session: a round runs for every few commits, and the
        # session's machinery cost more CPU than the round's statements.
        async with self.engine.connect() as conn, conn.begin():
            postgres = dialect_of(conn) == "postgresql"
            c = self.table.c
            unsent = (
                select(c.id)
                .where(c.sent_at.is_(None))
                .order_by(c.id)
                .limit(self.batch)
                .scalar_subquery()
            )
            claim = (
                update(self.table).values(sent_at=datetime.now(UTC))
                if self.keep_sent
                else delete(self.table)
            )
            # `sent_at IS NULL` again on the row itself: a row another relay claimed after
            # this statement's snapshot is re-checked against it, and skipped.
            claim = claim.where(c.id.in_(unsent), c.sent_at.is_(None))
            if postgres:
                claim = claim.where(self._gate)
            claimed = await conn.execute(claim.returning(c.id, c.topic, c.key, c.payload))
            rows = sorted(claimed.all(), key=lambda r: r.id)
            # Nothing claimed: nothing unsent, or another replica holds the lock (asked
            # again; a lock this transaction already holds is granted again).
            self._lock_busy = postgres and not rows and not await try_xact_lock(conn, self._lock)
            if rows:
                # Bounded, so an unreachable broker never pins a transaction open for long.
                batch = [(topic, key, payload) for _, topic, key, payload in rows]
                with publish_spans(batch) as traceparents:
                    await asyncio.wait_for(self.bus.publish_batch(batch, traceparents), 30)
            # A short batch drained the backlog; only a full one needs counting what is left.
            backlog = 0
            if len(rows) == self.batch:
                backlog = await self._unsent(conn)
            self._set_backlog(backlog)
            return len(rows)

    async def _publish_claimed(self) -> int:
        """PostgreSQL with Kafka: no transaction. The first statement takes the relay's lock (a
        session lock, held across the publish) and reads the unsent rows; once Kafka has
        acknowledged them, the second deletes them and releases the lock as its transaction
        commits (see `_delete_sql`; a round without rows releases it by a statement of its
        own): a replica that takes the lock then no longer sees those rows.
        Against a transaction (BEGIN, claim, COMMIT) that is one round trip before the publish
        instead of two: each is most of a millisecond of a hop, and the system calls of a round
        trip much of a round's CPU on a busy machine.

        Delivery is unchanged: nothing is deleted before Kafka has it; a crash or a failure
        before the delete publishes the rows again, which consumers' inboxes absorb. The
        delete commits without waiting for the WAL flush for the same reason. On any error
        the connection is thrown away, and the server releases the lock with it. (Released
        by the delete's statement while its transaction is still open, another replica could
        take the lock in that instant, read the rows being deleted and publish them again:
        hence the transaction-level lock that outlives the session's until the commit.)

        Which rows: not `ORDER BY id` from the head, where the rows published and deleted lie
        dead in the index until vacuum (up to a minute: thousands of entries, each checked
        against the heap), but the ids above the last one read and the spans below it that a
        running transaction may still commit (`ReadSpans`), each read by its own index range.
        Per-key order holds as with a read from the head: an event of a key that comes after
        another (DESIGN.md: a later transaction on the same contact, after the earlier one
        committed, serialised by a row lock or by its partition's consumer) is written when its
        transaction commits, so its id is drawn after the earlier row was visible. Whenever the
        later row is visible to a read, so is the earlier; if the relay had passed the earlier
        id while it was uncommitted, that id is still in a span (a span settles only once every
        transaction running when it was passed has ended, and its rows were then read), so the
        same read returns both, in id order. A row is missed only where that reasoning does not
        hold: an id drawn just before a read's snapshot by a transaction that had no
        transaction id yet (microseconds, and covered by `SETTLE_MIN_S` unless it then stays
        open a second), a sequence with a cache, ids reused or written by hand. About every
        `sweep_every_s` the relay therefore also reads every id below its tail once (a sweep,
        from the head): such a row is published at most that late, never lost. Another
        replica's rounds only make this one's tail lag: it reads the dead rows that replica
        left above it once, then moves past them. SQLite (the embedded default) keeps its read
        from the head: one writer at a time makes ids commit in order, a deleted row leaves no
        dead entry behind, and without AUTOINCREMENT it may reuse the id of a deleted last row.
        """
        now = time.monotonic()
        if now >= self._next_sweep:
            self.spans.sweep(now)
            self._next_sweep = now + self.sweep_every_s
        try:
            sent, backlog = await self._claimed_round(await self._connection(now), now)
        except BaseException:
            await self._let_go(broken=True)  # closed, never back in the pool holding the lock
            raise
        if not self._keep_connection:  # a round asked for outside the relay's own loop
            await self._let_go()
        if backlog is not None:
            self._set_backlog(backlog)
        return sent

    async def _claimed_round(self, driver: Any, now: float) -> tuple[int, int | None]:
        """`_publish_claimed`'s statements and publish on `driver` (an asyncpg connection): the
        rows published, and the backlog left if it was counted."""
        lows, highs = self.spans.bounds()
        found = await driver.fetch(self._read_sql, self._lock, self.batch, lows, highs)
        self._lock_busy = not found[0]["got"]
        if self._lock_busy:
            return 0, None
        rows = sorted((r for r in found if r["id"] is not None), key=lambda r: r["id"])
        ids = [r["id"] for r in rows]
        if rows:
            batch = [(r["topic"], r["key"], r["payload"]) for r in rows]
            with publish_spans(batch) as traceparents:
                await asyncio.wait_for(self.bus.publish_batch(batch, traceparents), 30)
            await driver.execute(self._delete_sql, ids, self._lock)
        else:
            await driver.execute(self._unlock_sql, self._lock)
        full = len(rows) == self.batch
        # Only once published and deleted: a failed round reads the same spans again.
        self.spans.advance(ids, full, found[0]["xmin"], found[0]["xmax"], now)
        # A short batch drained the backlog. A full one leaves rows to count, at most once a
        # second: the count reads every row left (14.7 ms a call in a burst of 10,000 timers),
        # and a backlog drains in a few seconds when Kafka is up.
        backlog: int | None = 0
        if full:
            backlog = None
            if now >= self._next_count:
                self._next_count = now + COUNT_EVERY_S
                backlog = int(await driver.fetchval(self._count_sql, self.spans.tail))
        return len(rows), backlog

    async def _connection(self, now: float) -> Any:
        """The asyncpg connection of the relay's own pooled connection, kept from one round to
        the next (`HOLD_CONNECTION_S`)."""
        if self._conn is not None and now - self._conn_since > HOLD_CONNECTION_S:
            await self._let_go()
        if self._conn is None:
            self._conn, self._conn_since = await self.engine.connect(), now
            self._driver = (await self._conn.get_raw_connection()).driver_connection
        return self._driver

    async def _let_go(self, broken: bool = False) -> None:
        """Give the kept connection back to the pool, or, `broken`, close it: a round that
        failed may have left the relay's session lock held on it (the server releases the
        lock with the connection)."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is None:
            return
        if broken:
            await conn.invalidate()
        await conn.close()

    async def _unsent(self, bind: AsyncSession | AsyncConnection) -> int:
        unsent = select(func.count()).select_from(self.table).where(self.table.c.sent_at.is_(None))
        return int(await bind.scalar(unsent) or 0)

    async def _count_backlog(self) -> None:
        async with self.sessions() as session:
            self._set_backlog(await self._unsent(session))

    def _set_backlog(self, backlog: int) -> None:
        self.backlog = backlog
        metrics.OUTBOX_BACKLOG.labels(self.service).set(backlog)

    async def _republish_recent(self) -> None:
        """The in-process bus forgets everything when the process stops, events published but
        not yet consumed included. So on start, mark the rows sent within the retention window
        unsent again: they go out once more, and consumers' inboxes skip what they applied."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(self.table)
                .where(self.table.c.sent_at >= datetime.now(UTC) - SENT_RETENTION)
                .values(sent_at=None)
            )

    async def _purge_sent(self) -> None:
        """Forget rows published over a day ago: Kafka is the replayable log, not the outbox."""
        now = datetime.now(UTC)
        if (now - self._last_purge).total_seconds() < 600:
            return
        self._last_purge = now
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(self.table).where(self.table.c.sent_at < now - SENT_RETENTION)
            )
