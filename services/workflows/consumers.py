"""workflows's bus subscriptions: envelopes in, trigger and engine handlers called."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from prometheus_client import Gauge
from pydantic import ValidationError

from services.workflows.doors import Doors, limits_of, workflows_settings
from services.workflows.engine.handlers import RunBook
from services.workflows.engine.timers import run_timers
from services.workflows.store import WorkflowsStore
from services.workflows.triggers import handlers
from services.workflows.triggers.handlers import Incoming
from shared.app import ServiceContext
from shared.bus import OFF_PATH_GATHER_MS, Subscription
from shared.errors import InvalidInput
from shared.events import topics
from shared.events.contacts import CONTACT_EVENT_TYPES
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import ENGAGEMENT_TYPES, LeadCaptured
from shared.events.notifications import NOTIFICATION_EVENT_TYPES
from shared.events.scores import SCORE_EVENT_TYPES
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

RUNS = Gauge(
    "leadwire_workflow_runs",
    "Runs of each workflow by status (refreshed periodically from the database)",
    ["workspace", "workflow", "status"],
)


class MalformedEvent(InvalidInput):
    """A consumed event whose data does not fit its type: it goes to the DLQ with the reason."""


def incoming(event: Envelope, models: Mapping[str, type[EventPayload]]) -> Incoming | None:
    """The event's data checked against its type's model; None for a type we do not read."""
    model = models.get(event.type)
    if model is None:
        return None
    try:
        data = model.model_validate(event.data).model_dump(mode="json")
    except ValidationError as exc:
        raise MalformedEvent(
            f"{event.type} {event.id}: {exc.error_count()} invalid field(s)",
            errors=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc
    return Incoming(event.type, data, event.correlationid, event.time)


# A use case of a polled batch of one workspace's events: (run book, store, workspace, events).
TopicHandler = Callable[[RunBook, WorkflowsStore, str, Sequence[Incoming]], Awaitable[None]]


def subscriptions(doors: Doors) -> Callable[[ServiceContext], Sequence[Subscription]]:
    def build(ctx: ServiceContext) -> Sequence[Subscription]:
        def batch(
            models: Mapping[str, type[EventPayload]], handle: TopicHandler
        ) -> Callable[[Sequence[Envelope], UnitOfWork], Awaitable[None]]:
            """A consumer of polled batches: each workspace's events handed over in order, one
            run book (written in bulk) for the whole transaction."""

            async def on_events(events: Sequence[Envelope], uow: UnitOfWork) -> None:
                by_workspace: dict[str, list[Incoming]] = defaultdict(list)
                for event in events:
                    item = incoming(event, models)
                    if item is not None:
                        by_workspace[event.workspace].append(item)
                if not by_workspace:
                    return
                store = WorkflowsStore(uow.session)
                book = RunBook(store, uow, doors.clock(), limits_of(ctx.settings))
                for workspace, items in by_workspace.items():
                    await handle(book, store, workspace, items)
                await book.flush()

                # The timer loop would not see the timers before the commit.
                def wake() -> None:
                    doors.wakeup.poke(store.earliest_timer)

                uow.after_commit(wake)

            return on_events

        def subscribe(
            purpose: str,
            topic: str,
            models: Mapping[str, type[EventPayload]],
            handle: TopicHandler,
            gather_ms: int = OFF_PATH_GATHER_MS,
        ) -> Subscription:
            # Events of other types are passed over undecoded; a poll of none opens nothing.
            return ctx.batch_subscription(
                purpose, [topic], batch(models, handle), types=models, gather_ms=gather_ms
            )

        leads: dict[str, type[EventPayload]] = {LeadCaptured.event_type: LeadCaptured}
        return [
            # A new lead's alert goes from the contact's events: those come at once. Leads (to
            # pair with their contacts), engagement, scores and outcomes gather a batch.
            subscribe(
                "contacts", topics.CONTACTS, CONTACT_EVENT_TYPES, handlers.on_contact_events, 0
            ),
            subscribe("leads", topics.LEADS, leads, handlers.on_lead),
            subscribe("engagement", topics.ENGAGEMENT, ENGAGEMENT_TYPES, handlers.on_engagement),
            subscribe("scores", topics.SCORES, SCORE_EVENT_TYPES, handlers.on_score_event),
            subscribe(
                "notifications",
                topics.NOTIFICATIONS,
                NOTIFICATION_EVENT_TYPES,
                handlers.on_notification_outcome,
            ),
        ]

    return build


def background(
    doors: Doors, timer_loop: bool = True
) -> Callable[[ServiceContext], Sequence[Callable[[], Coroutine[Any, Any, None]]]]:
    """The timer loop (tests that move a fake clock fire timers themselves), and the refresh
    of the per-workflow run counts in /metrics."""

    def build(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        own = workflows_settings(ctx.settings)
        # SQLite has no SKIP LOCKED: one claimer, as the embedded mode is one process.
        workers = own.workflows_timer_workers if ctx.engine.dialect.name == "postgresql" else 1

        async def timers() -> None:
            await run_timers(
                ctx,
                doors.clock,
                limits_of(ctx.settings),
                doors.wakeup,
                own.workflows_timer_batch,
                workers,
                own.workflows_timer_poll_s,
            )

        async def counts() -> None:
            while True:
                try:
                    await refresh_run_gauges(ctx)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("refreshing run counts failed", exc_info=True)
                await asyncio.sleep(own.workflows_metrics_interval_s)

        return [timers, counts] if timer_loop else [counts]

    return build


async def refresh_run_gauges(ctx: ServiceContext) -> None:
    async with ctx.sessions() as session:
        rows = await WorkflowsStore(session).all_counts()
    RUNS.clear()
    for workspace, workflow, status, count in rows:
        RUNS.labels(workspace, workflow, status).set(count)
