"""What the service's doors (HTTP routes, bus consumers, the timer loop) share: the clock, the
engine limits, the timer loop's wake-up, and a unit of work that wakes it after commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from services.workflows.engine.handlers import Limits, RunBook
from services.workflows.engine.timers import Wakeup
from services.workflows.settings import WorkflowsSettings
from services.workflows.store import WorkflowsStore
from shared.app import ServiceContext
from shared.clock import Clock, system_clock
from shared.settings import Settings
from shared.uow import UnitOfWork


def workflows_settings(settings: Settings) -> WorkflowsSettings:
    """This service's knobs, also when the app was given plain platform settings."""
    if isinstance(settings, WorkflowsSettings):
        return settings
    return WorkflowsSettings()


def limits_of(settings: Settings) -> Limits:
    own = workflows_settings(settings)
    return Limits(own.workflows_timezone, own.workflows_max_attempts, own.workflows_retry_base_s)


@dataclass
class Doors:
    clock: Clock = system_clock
    wakeup: Wakeup = field(default_factory=Wakeup)

    @asynccontextmanager
    async def work(
        self, ctx: ServiceContext
    ) -> AsyncIterator[tuple[RunBook, WorkflowsStore, UnitOfWork]]:
        """A transaction with the engine's run book; the timer loop hears of new timers after
        the commit."""
        async with ctx.uow() as uow:
            store = WorkflowsStore(uow.session)
            book = RunBook(store, uow, self.clock(), limits_of(ctx.settings))
            yield book, store, uow
            await book.flush()
        self.wakeup.poke(store.earliest_timer)
