"""The delivery worker: claims due deliveries from the database (recording each attempt before
anything is sent), sends them concurrently with per-channel Slack pacing, and records the
outcomes in batches. Retries are rows with a `next_attempt_at`, never in-memory sleeps, so a
restart loses none; only the short pacing waits of Slack live in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier import handlers
from services.notifier.channels.job import Job, Sender
from services.notifier.channels.secrets import SecretBox
from services.notifier.channels.slack import pace_key
from services.notifier.delivery import handlers as delivery
from services.notifier.delivery.domain import Outcome, Pacer, RetryPolicy
from services.notifier.models import Channel
from services.notifier.store import NotifierStore
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
# A Slack message whose channel is booked further ahead than this goes back to the database
# instead of holding an in-flight slot.
MAX_PACING_WAIT_S = 1.0
SWEEP_EVERY_S = 30.0


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        batch: int,
        max_in_flight: int,
        poll_interval_s: float,
        attempt_timeout_s: float,
        http_concurrency: int = 100,
    ) -> None:
        self._uow = uow
        self._senders = senders
        self._box = box
        self._links = links
        self._policy = policy
        self._pacer = Pacer(slack_interval_s)
        self._lease = timedelta(seconds=sending_lease_s)
        self._batch = batch
        self._max_in_flight = max_in_flight
        self._poll_interval_s = poll_interval_s
        self._attempt_timeout_s = attempt_timeout_s
        self._http_slots = asyncio.Semaphore(http_concurrency)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._results: asyncio.Queue[delivery.Result] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._secrets: dict[tuple[str, datetime], dict[str, str]] = {}
        self._rng = random.Random()
        self._last_sweep = 0.0

    def wake(self) -> None:
        """New deliveries were committed: claim them now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        recorder = asyncio.create_task(self._record_forever(), name="notifier:recorder")
        try:
            await self._claim_forever()
        finally:
            for task in list(self._in_flight):
                task.cancel()
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)

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
            if waiting:
                await delivery.prepare_waiting(waiting, store, uow, self._links, now)
            rows = await store.claim_due(now, min(self._batch, room))
            channels = await store.channels_by_id(
                [r["channel_id"] for r in rows if r["channel_id"]]
            )
        for row in rows:
            task = asyncio.create_task(self._attempt(row, channels.get(row["channel_id"] or "")))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(rows) + len(waiting)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()

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
        if key is not None:
            now = time.monotonic()
            wait = self._pacer.reserve(key, now)
            if wait > MAX_PACING_WAIT_S:
                self._pacer.release(key, now + wait)
                return Outcome("deferred", retry_after=wait)
            if wait > 0:
                await asyncio.sleep(wait)
        # HTTP sends wait for a free connection here, not in the client's pool: a pool with
        # thousands of queued requests spends its time matching them to connections.
        slots = self._http_slots if job.kind in ("slack", "webhook") else contextlib.nullcontext()
        async with slots:
            try:
                outcome = await asyncio.wait_for(sender.send(job), self._attempt_timeout_s)
            except TimeoutError:
                outcome = Outcome("retry", f"no answer within {self._attempt_timeout_s:g} s")
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
                    async with self._uow() as uow:
                        await delivery.record_results(
                            batch,
                            NotifierStore(uow.session),
                            uow,
                            self._links,
                            self._policy,
                            self._rng,
                        )
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database is away: keep the outcomes and try again; never drop one.
                    log.warning("recording outcomes failed, will retry", exc_info=True)
                    await asyncio.sleep(1.0)
