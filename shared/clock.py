"""The time a service's domain reads: the system clock, or, for end-to-end tests, one that a
test moves forward while the processes run.

Time-driven automations (a renewal reminder 30 days before a date, a win-back after 30 days
without interaction, a score decaying below a threshold) must be tested across the real
processes without waiting a month. When `LEADWIRE_TEST_CLOCK_FILE` names a file, the services
that read business time (contacts, scoring, workflows) add the number of seconds written in
it to the system clock. The file is re-read when it changes, so a test moves every process's
time by rewriting it. Never set in production: it exists for the test suite.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]
TEST_CLOCK_FILE = "LEADWIRE_TEST_CLOCK_FILE"
# How often the file's modification time is looked at: a moved clock is seen this soon.
_RECHECK_S = 0.05


def system_clock() -> datetime:
    return datetime.now(UTC)


class MovedClock:
    """The system clock plus the offset (seconds, may be fractional) held in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = timedelta(0)
        self._seen: float | None = None
        self._checked = 0.0

    def __call__(self) -> datetime:
        now = time.monotonic()
        if now - self._checked >= _RECHECK_S:
            self._checked = now
            self._reload()
        return datetime.now(UTC) + self._offset

    def _reload(self) -> None:
        try:
            changed = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._offset, self._seen = timedelta(0), None
            return
        if changed == self._seen:
            return
        text = self.path.read_text().strip()
        # A half-written file (the test rewrites it) is read again at the next check.
        try:
            self._offset = timedelta(seconds=float(text or 0))
        except ValueError:
            return
        self._seen = changed


def service_clock() -> Clock:
    """The clock a service's composition root hands its domain (see the module's docstring)."""
    path = os.environ.get(TEST_CLOCK_FILE)
    return MovedClock(Path(path)) if path else system_clock


def moved_clock_offset(path: Path) -> timedelta:
    """How far the test clock in `path` has been moved so far."""
    return timedelta(seconds=float(path.read_text().strip() or 0) if path.exists() else 0.0)


def move_test_clock(path: Path, by: timedelta) -> timedelta:
    """Move the processes reading `path` forward by `by`; returns the new total offset. The
    file is replaced atomically, so a process never reads half of it."""
    total = (moved_clock_offset(path) + by).total_seconds()
    scratch = path.with_suffix(".tmp")
    scratch.write_text(f"{total}\n")
    scratch.replace(path)
    return timedelta(seconds=total)
