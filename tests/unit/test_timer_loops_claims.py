"""The timer loops of workflows and scoring: with nothing due, each poll makes one claim (one
transaction), not one per claimer; a full batch (a burst) brings every claimer in, side by
side, until a claim comes back short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.scoring import consumers as scoring
from services.scoring.settings import ScoringSettings
from services.workflows.engine import timers as workflows
from services.workflows.engine.handlers import Limits
from services.workflows.engine.timers import Wakeup

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BATCH = 3


@dataclass
class Claims:
    """A fake claim of due timers: full batches while `due` lasts, then none."""

    due: int = 0
    made: int = 0  # claims made
    looks: int = 0  # reads of the next due time: one per round of the loop
    running: int = 0
    most_at_once: int = 0
    fired: list[int] = field(default_factory=list)

    async def claim(self, *_: Any) -> int:
        self.made += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(0.001)  # a transaction's round trips, where others overlap
            taken = min(BATCH, self.due)
            self.due -= taken
            self.fired.append(taken)
            return taken
        finally:
            self.running -= 1

    async def next_due(self, *_: Any) -> datetime | None:
        self.looks += 1
        return None


async def run_for(
    loop: Callable[[], Coroutine[Any, Any, None]], claims: Claims, rounds: int
) -> None:
    """Run `loop` until it has looked for the next due time `rounds` times, then stop it."""
    task = asyncio.create_task(loop())
    try:
        async with asyncio.timeout(30):
            while claims.looks < rounds:
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def workflows_loop(monkeypatch: pytest.MonkeyPatch) -> tuple[Claims, Callable[[], Any]]:
    claims = Claims()
    monkeypatch.setattr(workflows, "fire_once", claims.claim)
    monkeypatch.setattr(workflows, "next_due", claims.next_due)
    limits = Limits()

    def loop() -> Any:
        return workflows.run_timers(
            SimpleNamespace(),  # type: ignore[arg-type]  # the claims are faked
            lambda: NOW,
            limits,
            Wakeup(),
            BATCH,
            workers=2,
            poll_s=0.01,
        )

    return claims, loop


@pytest.fixture
def scoring_loop(monkeypatch: pytest.MonkeyPatch) -> tuple[Claims, Callable[[], Any]]:
    claims = Claims()
    monkeypatch.setattr(scoring, "fire_timers_once", claims.claim)
    monkeypatch.setattr(scoring, "next_timer_due", claims.next_due)
    settings = ScoringSettings(
        scoring_timer_poll_s=0.01, scoring_timer_batch=BATCH, scoring_timer_claimers=2
    )
    ctx = SimpleNamespace(
        settings=settings, engine=SimpleNamespace(dialect=SimpleNamespace(name="postgresql"))
    )
    timers_forever, _ = scoring.background(lambda: NOW)(ctx)  # type: ignore[arg-type]
    return claims, timers_forever


LOOPS = ["workflows_loop", "scoring_loop"]


@pytest.mark.parametrize("name", LOOPS)
async def test_with_nothing_due_each_round_claims_once(
    name: str, request: pytest.FixtureRequest
) -> None:
    claims, loop = request.getfixturevalue(name)
    await run_for(loop, claims, rounds=5)
    # The round under way when the loop stopped may have claimed without looking yet.
    assert claims.made <= claims.looks + 1
    assert claims.most_at_once == 1


@pytest.mark.parametrize("name", LOOPS)
async def test_a_burst_is_drained_by_every_claimer_side_by_side(
    name: str, request: pytest.FixtureRequest
) -> None:
    claims, loop = request.getfixturevalue(name)
    claims.due = 10 * BATCH
    await run_for(loop, claims, rounds=3)
    assert claims.due == 0
    assert sum(claims.fired) == 10 * BATCH
    assert claims.most_at_once == 2
