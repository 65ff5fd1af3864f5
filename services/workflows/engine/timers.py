"""The engine's third door, after HTTP and the bus: time. A loop sleeps until the next due
timer (woken early when a sooner one is scheduled in this process, and polling briefly for
timers other replicas schedule), then claims due timers with `FOR UPDATE SKIP LOCKED` in
batches, so several loops and replicas share them without firing one twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram

from services.workflows.engine.handlers import Limits, RunBook, fire_due_timers
from services.workflows.store import DueTimer, WorkflowsStore
from shared.app import ServiceContext
from shared.claims import drain
from shared.clock import Clock
from shared.waits import wait_at_most

log = logging.getLogger(__name__)

TIMERS_FIRED = Counter("leadwire_workflow_timers_fired_total", "Durable timers fired", ["kind"])
TIMER_LATENESS = Histogram(
    "leadwire_workflow_timer_lateness_seconds",
    "How long after its due time a timer fired",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 300),
)


# How late (seconds after due) the most recent timers fired, measured after their commit: read
# by the benchmark for exact percentiles (the histogram above has buckets only).
RECENT_LATENESS: deque[float] = deque(maxlen=200_000)


class Wakeup:
    """Tells the timer loop that a timer sooner than the one it sleeps towards was committed.

    A poke while the loop is claiming (not asleep) is kept: the loop's next sleep returns at
    once and it claims again, so a timer committed during a claim round is never left for the
    next poll. A timer due after the loop's sleep ends anyway (its next due timer, or its
    poll) wakes nothing: the loop reads the next due time when it wakes.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.wakes_at: datetime | None = None  # when the current sleep ends; None: awake

    def poke(self, due: datetime | None) -> bool:
        """A timer due at `due` was committed; True if that wakes the loop (or will end its
        next sleep at once)."""
        if due is None or (self.wakes_at is not None and due >= self.wakes_at):
            return False
        self._event.set()
        return True

    def claiming(self) -> None:
        """The loop starts a claim round: what was poked so far, the round will see."""
        self._event.clear()

    async def sleep(self, until: datetime | None, now: datetime, longest: float) -> None:
        seconds = longest if until is None else min(longest, (until - now).total_seconds())
        if seconds <= 0:
            return
        self.wakes_at = now + timedelta(seconds=seconds)
        try:
            await wait_at_most(self._event, seconds)
        finally:
            self.wakes_at = None


async def fire_once(ctx: ServiceContext, clock: Clock, limits: Limits, batch: int) -> int:
    """One claim of due timers in one transaction; returns how many fired.

    When the batch fails, its timers are fired one by one, and a timer that fails alone is
    postponed with backoff (never dropped), so one bad run cannot hold back the others.
    """
    try:
        fired = await _fire(ctx, clock, limits, batch)
    except Exception:
        if batch == 1:
            raise
        log.warning("timer batch failed, firing one by one", exc_info=True)
        fired = []
        for _ in range(batch):
            claimed: list[str] = []
            try:
                one = await _fire(ctx, clock, limits, 1, claimed)
            except Exception:
                log.error("timer failed, postponed", exc_info=True, extra={"timer": claimed})
                async with ctx.uow() as uow:
                    await WorkflowsStore(uow.session).postpone_timers(claimed, clock())
                continue
            if not one:
                break
            fired += one
    now = clock()
    for timer in fired:
        late = max(0.0, (now - timer.due_at).total_seconds())
        TIMERS_FIRED.labels(timer.kind).inc()
        TIMER_LATENESS.observe(late)
        RECENT_LATENESS.append(late)
    return len(fired)


async def _fire(
    ctx: ServiceContext,
    clock: Clock,
    limits: Limits,
    batch: int,
    claimed: list[str] | None = None,
) -> list[DueTimer]:
    # The loop reads the next due time after its claims: timers scheduled here need no poke.
    async with ctx.uow() as uow:
        store = WorkflowsStore(uow.session)
        book = RunBook(store, uow, clock(), limits)
        return await fire_due_timers(book, store, batch, claimed)


async def next_due(ctx: ServiceContext) -> datetime | None:
    async with ctx.sessions() as session:
        return await WorkflowsStore(session).next_due()


async def run_timers(
    ctx: ServiceContext,
    clock: Clock,
    limits: Limits,
    wakeup: Wakeup,
    batch: int,
    workers: int,
    poll_s: float,
) -> None:
    """Fire timers as they come due, for as long as the service runs."""
    while True:
        try:
            started = time.perf_counter()
            wakeup.claiming()
            await drain(lambda: fire_once(ctx, clock, limits, batch), batch, workers)
            due = await next_due(ctx)
            if due is None or due > clock():
                await wakeup.sleep(due, clock(), poll_s)
            elif time.perf_counter() - started < 0.001:
                await asyncio.sleep(0.01)  # due but claimed by another replica: let it work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("timer loop failed, will retry", exc_info=True)
            await asyncio.sleep(1)
