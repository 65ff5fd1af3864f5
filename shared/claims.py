"""Draining due work (timers) with several claimers, each claim a transaction of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def drain(claim: Callable[[], Awaitable[int]], batch: int, claimers: int) -> None:
    """Claim due work until a claim comes back short of `batch`. One claim looks first: with
    nothing due (most rounds of a timer loop) that is one transaction, not one per claimer.
    A full batch is a burst, which `claimers` then drain side by side, each until its own
    claim comes back short (`FOR UPDATE SKIP LOCKED` keeps them apart)."""
    if await claim() < batch:
        return

    async def until_short() -> None:
        while await claim() >= batch:
            pass

    await asyncio.gather(*(until_short() for _ in range(max(1, claimers))))
