"""The delivery worker wakes its claim when committed deliveries become due (`wake_at`): at
each time asked for, never before it, an earlier time first."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from services.notifier.delivery.worker import DeliveryWorker, utcnow
from tests.unit.notifier.test_admission import worker


async def test_each_time_asked_wakes_the_claim_once_it_has_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woken: list[float] = []
    monkeypatch.setattr(DeliveryWorker, "wake", lambda self: woken.append(time.monotonic()))
    subject = worker()
    start, now = time.monotonic(), utcnow()
    # A later time first, then an earlier one, then one between: none of them is lost.
    for ms in (60, 20, 40):
        subject.wake_at(now + timedelta(milliseconds=ms))
    deadline = start + 10
    while len(woken) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(woken) == 3
    for at, ms in zip(woken, (20, 40, 60), strict=True):
        assert at - start >= ms / 1000 - 0.002


async def test_a_time_past_wakes_at_once_and_none_leaves_it_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woken: list[str] = []
    monkeypatch.setattr(DeliveryWorker, "wake", lambda self: woken.append("now"))
    subject = worker()
    subject.wake_at(None)
    assert woken == []
    subject.wake_at(utcnow() - timedelta(seconds=1))
    assert woken == ["now"]
