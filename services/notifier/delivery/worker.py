"""The delivery worker: sends deliveries concurrently with per-channel Slack pacing and
records the outcomes in batches.

A new request that can go at once is started by the transaction that accepts it (`Admission`:
its attempt recorded there, the send begun the moment it commits). Everything else is claimed
from the database: paced messages, retries, requests that waited for their contact. A claimed
attempt is recorded (the delivery `sending`, an attempt row) in the claim's transaction when
the message can go at once, and otherwise only when its pacing slot comes: a paced Slack
message waiting in memory is merely held (leased to this process for a short while), so a
process that dies while holding it leaves it unsent and unattempted, to be claimed again.
Retries are rows with a `next_attempt_at`, never in-memory sleeps, so a restart loses none."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier import handlers
from services.notifier.channels.job import Job, Sender
from services.notifier.channels.secrets import SecretBox
from services.notifier.channels.slack import pace_key
from services.notifier.delivery import handlers as delivery
from services.notifier.delivery.domain import Outcome, Pacer, RetryPolicy
from services.notifier.models import Channel
from services.notifier.requests import handlers as intake
from services.notifier.requests.statement import DEFER_AT_MOST, OneStatement
from services.notifier.store import NotifierStore
from shared.uow import UnitOfWork
from shared.waits import wait_at_most

log = logging.getLogger(__name__)
# A Slack message whose channel is booked further ahead than this goes back to the database
# (due at its slot) instead of waiting in memory.
MAX_PACING_WAIT_S = 1.0
SWEEP_EVERY_S = 30.0
# How many held deliveries one transaction starts at most.
START_BATCH = 500
# How many later wakes (`wake_at`) are remembered at most; beyond, the poll finds the rest.
MAX_WAKE_TIMES = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Plan:
    """What a claim does with each due delivery: start it now, hold it in memory until its
    pacing slot (seconds from now), or put it back until a later slot."""

    now: list[dict[str, Any]]
    held: list[tuple[dict[str, Any], float]]
    later: list[tuple[str, datetime]]


class Admission:
    """The deliveries one accepting transaction starts itself: their attempt is recorded in that
    transaction and they are sent the moment it commits, with no claim or poll in between.
    Called as the transaction prepares them (`requests.handlers.Admit`), then either
    `launch`ed with those it recorded or `cancel`led if it rolled back."""

    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker
        # Pacing slots taken, to give back for any delivery that is not sent after all.
        self.slots: dict[str, tuple[str, float]] = {}
        self.channels: dict[str, Channel] = {}

    def __call__(self, rows: Sequence[dict[str, Any]], channels: Mapping[str, Channel]) -> set[str]:
        return self._worker._admit(self, rows, channels)

    def launch(self, started: Sequence[Mapping[str, Any]]) -> None:
        """The transaction committed with the attempts of `started`: send them now."""
        self._worker._launch(self, started)

    def cancel(self) -> None:
        """The transaction rolled back: nothing started."""
        self._worker._release(self)


class DeliveryWorker:
    """One per service process; several replicas share the work through SKIP LOCKED claims."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        senders: Mapping[str, Sender],
        box: SecretBox,
        links: handlers.Links,
        policy: RetryPolicy,
        *,
        slack_interval_s: float,
        sending_lease_s: float,
        hold_lease_s: float,
        batch: int,
        max_in_flight: int,
        poll_interval_s: float,
        attempt_timeout_s: float,
        http_concurrency: int = 100,
        one_statement: Callable[[], OneStatement] | None = None,
    ) -> None:
        self._uow = uow
        self._one_statement = one_statement  # PostgreSQL only
        self._senders = senders
        self._box = box
        self._links = links
        self._policy = policy
        self._pacer = Pacer(slack_interval_s)
        self._lease = timedelta(seconds=sending_lease_s)
        # A hold outlives the longest wait for a slot, with room for a slow start.
        self._hold = timedelta(seconds=max(hold_lease_s, 2 * MAX_PACING_WAIT_S + 1.0))
        self._holder = f"{uuid.uuid4().hex[:12]}"
        self._batch = batch
        self._max_in_flight = max_in_flight
        self._poll_interval_s = poll_interval_s
        self._attempt_timeout_s = attempt_timeout_s
        self._http_slots = asyncio.Semaphore(http_concurrency)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._results: asyncio.Queue[delivery.Result] = asyncio.Queue()
        self._starts: asyncio.Queue[tuple[str, asyncio.Future[Mapping[str, Any] | None]]] = (
            asyncio.Queue()
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._secrets: dict[tuple[str, datetime], dict[str, str]] = {}
        self._rng = random.Random()
        self._last_sweep = 0.0
        # When to claim again for deliveries due later (loop times), earliest first.
        self._wake_times: list[float] = []
        self._timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """New deliveries were committed: claim them now rather than at the next poll."""
        self._wake.set()

    def wake_at(self, when: datetime | None) -> None:
        """Committed deliveries become due at `when`: claim then (now if it has passed),
        rather than at the next poll."""
        if when is None:
            return
        delay = (when - utcnow()).total_seconds()
        if delay <= 0:
            self.wake()
            return
        if len(self._wake_times) >= MAX_WAKE_TIMES:
            return  # the poll finds them
        loop = asyncio.get_running_loop()
        # A millisecond late rather than early: the claim must find them due by its clock.
        heapq.heappush(self._wake_times, loop.time() + delay + 0.001)
        if self._timer is None or self._wake_times[0] < self._timer.when():
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer, for the earliest wake asked for."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._wake_times:
            self._timer = loop.call_at(self._wake_times[0], self._wake_timer_fired, loop)

    def _wake_timer_fired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        while self._wake_times and self._wake_times[0] <= loop.time():
            heapq.heappop(self._wake_times)
        self.wake()
        self._arm(loop)

    def admission(self) -> Admission:
        """For one accepting transaction: which of its new deliveries start at once."""
        return Admission(self)

    def _admit(
        self,
        admission: Admission,
        rows: Sequence[dict[str, Any]],
        channels: Mapping[str, Channel],
    ) -> set[str]:
        """Take the deliveries that can go now: while there is room in flight, and for Slack
        only when the channel's pace lets it go at once (the others wait for a claim, which
        holds them until their slot). Each taken row is marked as started."""
        room = self._max_in_flight - len(self._in_flight)
        clock = time.monotonic()
        now = utcnow()
        taken: set[str] = set()
        for row in rows:
            if len(taken) >= room:
                break
            channel = channels.get(row["channel_id"] or "")
            if row["channel_id"] and channel is None:
                continue
            if row["kind"] == "slack":
                key = pace_key(self._job(row, channel))
                wait = self._pacer.reserve(key, clock)
                if wait > 0:
                    self._pacer.release(key, clock + wait)
                    continue
                admission.slots[row["id"]] = (key, clock)
            if channel is not None:
                admission.channels[channel.id] = channel
            row.update(
                status="sending",
                attempts=row["attempts"] + 1,
                claimed_at=now,
                next_attempt_at=None,
                first_attempt_at=row["first_attempt_at"] or now,
                updated_at=now,
            )
            taken.add(row["id"])
        return taken

    def _launch(self, admission: Admission, started: Sequence[Mapping[str, Any]]) -> None:
        for row in started:
            admission.slots.pop(row["id"], None)
            channel = admission.channels.get(row["channel_id"] or "")
            self._spawn(self._attempt(row, channel))
        self._release(admission)

    def _release(self, admission: Admission) -> None:
        for key, at in admission.slots.values():
            self._pacer.release(key, at)
        admission.slots.clear()

    async def run(self) -> None:
        helpers = [
            asyncio.create_task(self._record_forever(), name="notifier:recorder"),
            asyncio.create_task(self._start_forever(), name="notifier:starter"),
        ]
        try:
            await self._claim_forever()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for task in [*self._in_flight, *helpers]:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _claim_forever(self) -> None:
        while True:
            self._wake.clear()
            claimed = 0
            try:
                every = min(SWEEP_EVERY_S, self._lease.total_seconds() / 2)
                if time.monotonic() - self._last_sweep > every:
                    await self._sweep()
                claimed = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("claiming deliveries failed, will retry", exc_info=True)
                await asyncio.sleep(self._poll_interval_s)
                continue
            if claimed >= self._batch:
                continue
            await wait_at_most(self._wake, self._poll_interval_s)

    async def _sweep(self) -> None:
        """Mark deliveries whose sender died mid-attempt as `unknown`; look again at those
        waiting for their contact."""
        now = utcnow()
        async with self._uow() as uow:
            store = NotifierStore(uow.session)
            stale = await store.stale_sending(now - self._lease, 500)
            if stale:
                log.warning("deliveries with an unknown outcome", extra={"count": len(stale)})
                await delivery.mark_unknown(stale, store, now)
        self._last_sweep = time.monotonic()

    async def _claim(self) -> int:
        room = self._max_in_flight - len(self._in_flight)
        if room <= 0:
            self._room.clear()
            await self._room.wait()
            return 0
        now = utcnow()
        async with self._uow() as uow:
            store = NotifierStore(uow.session)
            waiting = await store.unprepared_due(now, self._batch)
            again = None
            if waiting:
                again = await intake.prepare_waiting(waiting, store, uow, self._links, now)
            rows = await store.due(now, min(self._batch, room))
            channels = await store.channels_by_id(
                [r["channel_id"] for r in rows if r["channel_id"]]
            )
            plan = self._plan(rows, channels, now)
            started = await store.start_attempts([r["id"] for r in plan.now], now)
            await store.hold([r["id"] for r, _ in plan.held], self._holder, now + self._hold)
            await store.update_deliveries(
                [{"id": i, "next_attempt_at": at, "updated_at": now} for i, at in plan.later]
            )
        # Those still waiting for their contact are looked at again soon (not at the poll).
        self.wake_at(again)
        for row in started:
            self._spawn(self._attempt(row, channels.get(row["channel_id"] or "")))
        for row, wait in plan.held:
            self._spawn(self._attempt_at_slot(row, channels.get(row["channel_id"] or ""), wait))
        return len(rows) + len(waiting)

    def _plan(
        self, rows: Sequence[dict[str, Any]], channels: Mapping[str, Channel], now: datetime
    ) -> Plan:
        """Book each Slack message a slot on its channel's pace; everything else goes now."""
        plan = Plan([], [], [])
        clock = time.monotonic()
        for row in rows:
            channel = channels.get(row["channel_id"] or "")
            if row["kind"] != "slack" or (row["channel_id"] and channel is None):
                plan.now.append(row)
                continue
            key = pace_key(self._job(row, channel))
            wait = self._pacer.reserve(key, clock)
            if wait <= 0:
                plan.now.append(row)
            elif wait <= MAX_PACING_WAIT_S:
                plan.held.append((row, wait))
            else:
                self._pacer.release(key, clock + wait)
                plan.later.append((row["id"], now + timedelta(seconds=wait)))
        return plan

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()

    async def _attempt_at_slot(
        self, row: Mapping[str, Any], channel: Channel | None, wait: float
    ) -> None:
        """A held message: at its slot, record the attempt (batched with others'), then send."""
        await asyncio.sleep(wait)
        future: asyncio.Future[Mapping[str, Any] | None] = (
            asyncio.get_running_loop().create_future()
        )
        await self._starts.put((row["id"], future))
        started = await future
        if started is None:
            # Our hold ran out and another process took it: it is theirs to send.
            log.info("held delivery taken by another process", extra={"delivery": row["id"]})
            return
        await self._attempt(started, channel)

    async def _start_forever(self) -> None:
        """Record the attempts of held messages whose slot came, many in one transaction."""
        while True:
            batch = [await self._starts.get()]
            while not self._starts.empty() and len(batch) < START_BATCH:
                batch.append(self._starts.get_nowait())
            waiting = [(i, f) for i, f in batch if not f.done()]
            while True:
                try:
                    async with self._uow() as uow:
                        rows = await NotifierStore(uow.session).start_attempts(
                            [i for i, _ in waiting], utcnow(), holder=self._holder
                        )
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database is away: nothing was sent, so nothing is lost by waiting.
                    log.warning("starting held deliveries failed, will retry", exc_info=True)
                    await asyncio.sleep(1.0)
            started = {r["id"]: r for r in rows}
            for delivery_id, future in waiting:
                if not future.done():
                    future.set_result(started.get(delivery_id))

    def _job(self, row: Mapping[str, Any], channel: Channel | None) -> Job:
        secrets: dict[str, str] = {}
        if channel is not None and channel.sealed_secrets:
            key = (channel.id, channel.updated_at)
            if key not in self._secrets:
                self._secrets[key] = self._box.open(channel.sealed_secrets)
            secrets = self._secrets[key]
        return Job(
            delivery_id=row["id"],
            workspace=row["workspace"],
            channel_id=row["channel_id"],
            channel_name=channel.name if channel else row["channel"],
            kind=row["kind"],
            purpose=row["purpose"],
            recipient=row["recipient"],
            message=row["message"],
            attempt=row["attempts"],
            config=dict(channel.config) if channel else {},
            secrets=secrets,
        )

    async def _attempt(self, row: Mapping[str, Any], channel: Channel | None) -> None:
        try:
            outcome = await self._send(row, channel)
        except Exception as exc:  # a bug in a sender must not lose the attempt's record
            log.exception("sender failed", extra={"delivery": row["id"]})
            outcome = Outcome("retry", f"internal error: {type(exc).__name__}")
        await self._results.put(delivery.Result(row, outcome, utcnow()))

    async def _send(self, row: Mapping[str, Any], channel: Channel | None) -> Outcome:
        if row["channel_id"] and channel is None:
            return Outcome("failed", "unknown_channel: the channel was deleted")
        job = self._job(row, channel)
        sender = self._senders[job.kind]
        key = pace_key(job) if job.kind == "slack" else None
        # HTTP sends wait for a free connection here, not in the client's pool: a pool with
        # thousands of queued requests spends its time matching them to connections.
        slots = self._http_slots if job.kind in ("slack", "webhook") else contextlib.nullcontext()
        async with slots:
            if key is not None:
                # The pace is kept where the message leaves: however long the wait for a
                # connection was, two sends on one channel start at least an interval apart.
                wait = self._pacer.sending(key, time.monotonic(), MAX_PACING_WAIT_S)
                if wait > MAX_PACING_WAIT_S:  # Slack asked to wait (429) meanwhile
                    return Outcome("retry", "the channel is paused by Slack", retry_after=wait)
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                if job.kind == "email":
                    # SMTP times each command itself; the wait for one of the pool's
                    # connections is no attempt timing out (one cut off mid-DATA could have
                    # been delivered, and would be sent again).
                    outcome = await sender.send(job)
                else:
                    outcome = await asyncio.wait_for(sender.send(job), self._attempt_timeout_s)
            except TimeoutError:
                detail = f"no answer within {self._attempt_timeout_s:g} s"
                # A Slack post carries no idempotency key: one that may have arrived is not
                # sent again.
                outcome = Outcome("unknown" if job.kind == "slack" else "retry", detail)
        if key is not None and outcome.status_code == 429:
            self._pacer.pause(key, time.monotonic() + (outcome.retry_after or 1.0))
        return outcome

    async def _record_forever(self) -> None:
        while True:
            batch = [await self._results.get()]
            while not self._results.empty() and len(batch) < 500:
                batch.append(self._results.get_nowait())
            while True:
                try:
                    await self._record(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database is away: keep the outcomes and try again; never drop one.
                    log.warning("recording outcomes failed, will retry", exc_info=True)
                    await asyncio.sleep(1.0)

    async def _record(self, batch: Sequence[delivery.Result]) -> None:
        """One batch of outcomes, in one transaction. A small batch without bounces (which
        write suppressions as they go) is written by one statement that commits on its own
        (`OneStatement`): one round trip where a transaction takes four (BEGIN, the outcomes,
        their events, COMMIT)."""
        one = self._one_statement
        if (
            one is not None
            and len(batch) <= DEFER_AT_MOST
            and all(result.outcome.kind != "bounced" for result in batch)
        ):
            async with one() as tx:
                store = NotifierStore(tx.session)
                await delivery.record_results(
                    batch, store, tx, self._links, self._policy, self._rng, defer=True
                )
                await tx.commit()
            return
        async with self._uow() as uow:
            store = NotifierStore(uow.session)
            await delivery.record_results(batch, store, uow, self._links, self._policy, self._rng)
