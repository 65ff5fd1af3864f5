"""workflows's bus subscriptions: envelopes in, trigger and engine handlers called."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from services.workflows.doors import Doors, limits_of, workflows_settings
from services.workflows.engine.handlers import RunBook
from services.workflows.engine.timers import run_timers
from services.workflows.store import WorkflowsStore
from services.workflows.triggers import handlers
from services.workflows.triggers.handlers import Incoming
from shared.app import ServiceContext, first_of_each_id
from shared.bus import OFF_PATH_GATHER_MS, Subscription
from shared.errors import InvalidInput
from shared.events import topics
from shared.events.contacts import CONTACT_EVENT_TYPES
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import ENGAGEMENT_TYPES, LeadCaptured
from shared.events.notifications import NOTIFICATION_EVENT_TYPES
from shared.events.scores import SCORE_EVENT_TYPES
from shared.one_statement import OneStatement
from shared.transient import is_transient
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

CONTACT_BATCHES = Counter(
    "leadwire_workflows_contact_batches_total",
    "Batches of contact events by how they were written: in one statement, in a transaction "
    "(careful), or in a transaction after the one statement failed (retried)",
    ["way"],
)
RUNS = Gauge(
    "leadwire_workflow_runs",
    "Runs of each workflow by status (refreshed periodically from the database)",
    ["workspace", "workflow", "status"],
)

# The most of its time the refresh of `RUNS` may spend reading (see `next_count_after`).
COUNTS_SHARE = 0.01


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


def by_workspace(
    events: Sequence[Envelope], models: Mapping[str, type[EventPayload]]
) -> dict[str, list[Incoming]]:
    """The events of types read here, checked (`incoming`), per workspace in polled order."""
    found: dict[str, list[Incoming]] = defaultdict(list)
    for event in events:
        item = incoming(event, models)
        if item is not None:
            found[event.workspace].append(item)
    return found


def subscriptions(doors: Doors) -> Callable[[ServiceContext], Sequence[Subscription]]:
    def build(ctx: ServiceContext) -> Sequence[Subscription]:
        def batch(
            models: Mapping[str, type[EventPayload]], handle: TopicHandler
        ) -> Callable[[Sequence[Envelope], UnitOfWork], Awaitable[None]]:
            """A consumer of polled batches: each workspace's events handed over in order, one
            run book (written in bulk) for the whole transaction."""

            async def on_events(events: Sequence[Envelope], uow: UnitOfWork) -> None:
                parts = by_workspace(events, models)
                if not parts:
                    return
                store = WorkflowsStore(uow.session)
                book = RunBook(store, uow, doors.clock(), limits_of(ctx.settings))
                for workspace, items in parts.items():
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
        contacts = subscribe(
            "contacts", topics.CONTACTS, CONTACT_EVENT_TYPES, handlers.on_contact_events, 0
        )
        if ctx.engine.dialect.name == "postgresql":
            contacts = replace(contacts, handler=contacts_at_once(ctx, doors, contacts))
        return [
            # A new lead's alert goes from the contact's events: those come at once. Leads (to
            # pair with their contacts), engagement, scores and outcomes gather a batch.
            contacts,
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


# Contact events whose handling may write before its batch's statement, or moves runs it
# does not read with the contact's (merges, erasures, a refused command's run): never tried
# in one statement.
CAREFUL_CONTACT_EVENTS = frozenset(
    {"contact.merged", "contact.deleted", "contact.command_rejected"}
)
# The largest batch tried in one statement: it saves two round trips, which matter to a
# lead's path at low rates, not to a big batch, which a concurrent move would make redo.
AT_ONCE_AT_MOST = 64


def contacts_at_once(
    ctx: ServiceContext, doors: Doors, careful: Subscription
) -> Callable[[Sequence[Envelope]], Awaitable[None]]:
    """PostgreSQL: a small batch of contact events (a new lead's, usually) handled by reads
    outside any transaction and one statement that commits by itself: two round trips
    where the transaction takes five (BEGIN, the batch's two reads, its write, COMMIT), on
    the hop that starts a lead's alert. Runs are read without locks; the statement writes a
    run back only if nobody moved it meanwhile, and claims the events strictly, or fails
    whole (`RunsStore.checked`). Whatever this way cannot do (a redelivery, a run moved by
    another transaction, a write before the statement, a batch of merges or erasures), the
    careful way does: the same handler in a transaction, claiming first on a retry."""
    group = careful.group

    def eligible(events: Sequence[Envelope]) -> bool:
        if len(events) > AT_ONCE_AT_MOST or any(e.type in CAREFUL_CONTACT_EVENTS for e in events):
            return False
        return not any(handlers.known_to_pair(w) for w in {e.workspace for e in events})

    async def at_once(events: Sequence[Envelope]) -> None:
        todo = first_of_each_id(events)
        if eligible(todo):
            try:
                store = await handle_at_once(todo)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the careful way would fail too: the dispatcher waits it out
                # Expected now and then (a redelivery, a run moved meanwhile): not a fault.
                log.debug("contact events: one statement failed, the careful way", exc_info=True)
                CONTACT_BATCHES.labels("retried").inc()
            else:
                CONTACT_BATCHES.labels("one_statement").inc()
                doors.wakeup.poke(store.earliest_timer)
                return
        else:
            CONTACT_BATCHES.labels("careful").inc()
        await careful.handler(events)

    async def handle_at_once(events: Sequence[Envelope]) -> WorkflowsStore:
        statement = OneStatement(ctx.sessions, ctx.spec.outbox, ctx.spec.inbox, ctx.relay.notify)
        async with statement as tx:
            tx.claim_at_commit(group, [e.id for e in events])
            store = WorkflowsStore(tx.session, checked=True)
            book = RunBook(store, tx, doors.clock(), limits_of(ctx.settings))
            for workspace, items in by_workspace(events, CONTACT_EVENT_TYPES).items():
                await handlers.on_contact_events(book, store, workspace, items)
            tx.writing()
            await book.flush()  # the claim at least: the statement runs for every batch
            await tx.wrote()
        return store

    return at_once


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
                started = time.monotonic()
                try:
                    await refresh_run_gauges(ctx)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("refreshing run counts failed", exc_info=True)
                took = time.monotonic() - started
                await asyncio.sleep(next_count_after(own.workflows_metrics_interval_s, took))

        return [timers, counts] if timer_loop else [counts]

    return build


def next_count_after(interval_s: float, took_s: float) -> float:
    """Seconds until the run counts are read again: `interval_s`, or longer after a slow read.
    The read counts every run there is, in every replica: an index-only scan that took
    170-235 ms (three processes with parallel workers) at two million runs, and grows with
    them. So the loop spaces its reads for them to take at most `COUNTS_SHARE` of its time."""
    return max(interval_s, took_s / COUNTS_SHARE - took_s)


async def refresh_run_gauges(ctx: ServiceContext) -> None:
    async with ctx.sessions() as session:
        rows = await WorkflowsStore(session).all_counts()
    RUNS.clear()
    for workspace, workflow, status, count in rows:
        RUNS.labels(workspace, workflow, status).set(count)
