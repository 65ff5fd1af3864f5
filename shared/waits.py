"""Waiting for an asyncio event at most so long."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; whether it is set. By
    `asyncio.timeout`, not `asyncio.wait_for`: on 3.11 wait_for can swallow a cancellation that
    races the event, and then a stopping task never stops."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
