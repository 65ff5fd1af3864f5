"""shared.waits: waiting for an event at most so long."""

from __future__ import annotations

import asyncio

import pytest

from shared.waits import wait_at_most


async def test_an_event_never_set_is_waited_for_only_so_long() -> None:
    assert await wait_at_most(asyncio.Event(), 0.01) is False


async def test_an_event_set_meanwhile_ends_the_wait() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_at_most(event, 30) is True


async def test_a_cancelled_waiter_is_cancelled_even_as_the_event_is_set() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_at_most(event, 30))
    await asyncio.sleep(0)  # the waiter waits
    event.set()
    waiter.cancel()  # in the same step as the event: the cancellation must win
    with pytest.raises(asyncio.CancelledError):
        await waiter
