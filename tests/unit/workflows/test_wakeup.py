"""The timer loop's wake-up: a timer committed sooner than the loop's next wake-up (its next
timer or its poll), while it sleeps or while it claims, wakes it; a later one does not."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from services.workflows.engine.timers import Wakeup

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def slept(wakeup: Wakeup, until: datetime | None, longest: float = 5.0) -> float:
    started = time.perf_counter()
    await wakeup.sleep(until, NOW, longest)
    return time.perf_counter() - started


class TestWakeup:
    async def test_a_sooner_timer_wakes_the_sleeping_loop(self) -> None:
        wakeup = Wakeup()
        wakeup.claiming()
        sleeping = asyncio.create_task(slept(wakeup, NOW + timedelta(seconds=30)))
        await asyncio.sleep(0.05)
        wakeup.poke(NOW + timedelta(seconds=1))
        assert await asyncio.wait_for(sleeping, 2) < 1

    async def test_a_later_timer_lets_it_sleep(self) -> None:
        wakeup = Wakeup()
        wakeup.claiming()
        sleeping = asyncio.create_task(slept(wakeup, NOW + timedelta(seconds=30), longest=0.3))
        await asyncio.sleep(0.05)
        wakeup.poke(NOW + timedelta(seconds=60))
        assert await sleeping >= 0.25

    async def test_a_timer_committed_while_the_loop_claims_is_not_lost(self) -> None:
        wakeup = Wakeup()
        wakeup.claiming()
        wakeup.poke(NOW + timedelta(seconds=1))  # committed during the claim round
        assert await slept(wakeup, None) < 1
        wakeup.claiming()  # the next round saw it: sleeping again waits
        assert await slept(wakeup, None, longest=0.2) >= 0.15

    async def test_with_no_timer_only_one_due_before_its_poll_ends_wakes_it(self) -> None:
        wakeup = Wakeup()
        wakeup.claiming()
        sleeping = asyncio.create_task(wakeup.sleep(None, NOW, 60))  # polls in a minute
        await asyncio.sleep(0)
        assert wakeup.wakes_at == NOW + timedelta(seconds=60)
        # Due after the poll: the loop reads it when it wakes, no need to wake it now.
        assert not wakeup.poke(NOW + timedelta(seconds=90))
        assert not sleeping.done()
        assert wakeup.poke(NOW + timedelta(seconds=30))
        await asyncio.wait_for(sleeping, 5)
        assert wakeup.wakes_at is None  # awake: any timer committed now is kept for the round
        assert wakeup.poke(NOW + timedelta(days=1))
