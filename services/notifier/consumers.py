"""notifier's bus subscriptions: envelope in, handler call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.notifier import handlers
from services.notifier.delivery.worker import DeliveryWorker
from services.notifier.requests import handlers as intake
from services.notifier.requests.statement import DEFER_AT_MOST, WriteBeforeCommit, statement_of
from services.notifier.store import NotifierStore
from shared import tracing
from shared.app import ServiceContext
from shared.bus import Subscription
from shared.errors import InvalidInput
from shared.events import topics
from shared.events.contacts import ContactDeleted, ContactMerged
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationRequested
from shared.inbox import AlreadyHandled
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def requests_subscription(
    ctx: ServiceContext, links: handlers.Links, worker: DeliveryWorker
) -> Subscription:
    """Notification requests, a polled batch accepted at once (one transaction, or for a small
    batch one statement). The deliveries that can go at once have their first attempt recorded
    there and are sent the moment it commits; the
    worker is woken for the rest (paced, held: at once; waiting for their contact: at their
    next look), so none waits for its next poll."""
    group = ctx.group("requests")
    one_statement = statement_of(ctx)

    async def handle(events: Sequence[Envelope]) -> None:
        received = datetime.now(UTC)
        admission = worker.admission()
        try:
            # The inbox is checked by the accepting statement (a round trip fewer before the
            # first attempt), and the deliveries written there too.
            accepted = await accept(events, received, admission, claim_first=False)
        except Exception as exc:
            # A redelivery among them (`AlreadyHandled`), or a failure, which a request
            # accepted a second time may cause: ask the inbox first, as always.
            if isinstance(exc, WriteBeforeCommit):
                # Still correct the careful way, but every small batch would now pay for both.
                log.error("the one-statement accept wrote before its statement", exc_info=True)
            admission.cancel()
            admission = worker.admission()
            try:
                accepted = await accept(events, received, admission, claim_first=True)
            except BaseException:
                admission.cancel()
                raise
        except BaseException:
            admission.cancel()
            raise
        admission.launch(accepted.started)
        worker.wake_at(accepted.due_at)

    async def accept(
        events: Sequence[Envelope], received: datetime, admission: intake.Admit, claim_first: bool
    ) -> intake.Accepted:
        ids = [e.id for e in events]
        if not claim_first and ctx.engine.dialect.name == "postgresql":
            requests = requests_of(events, set(ids))
            if len(requests) <= DEFER_AT_MOST:
                # Reads outside a transaction, then one statement writing it all: two round
                # trips before the first attempt, not four (see `OneStatement`).
                async with one_statement() as tx:
                    store = NotifierStore(tx.session)
                    accepted = await intake.accept_requests(
                        requests, store, tx, links, received, admission, defer=True
                    )
                    await tx.commit(group, ids)
                return accepted
        async with ctx.uow() as uow:
            if claim_first:
                fresh = await uow.first_times(group, ids)
            else:
                uow.claim_at_commit(group, ids)
                fresh = set(ids)
            requests = requests_of(events, fresh)
            # A small first try also leaves its deliveries to the commit's statement (a round
            # trip fewer): a key seen before fails that commit, and the retry claims first.
            return await intake.accept_requests(
                requests,
                NotifierStore(uow.session),
                uow,
                links,
                received,
                admission,
                defer=not claim_first and len(requests) <= DEFER_AT_MOST,
            )

    return Subscription(group, (topics.NOTIFICATION_REQUESTS,), handle)


def requests_of(events: Sequence[Envelope], fresh: set[str]) -> list[intake.Request]:
    """The requests among `events` whose ids are in `fresh` (each id once)."""
    fresh = set(fresh)
    requests = []
    for event in events:
        if event.id not in fresh or event.type != NotificationRequested.event_type:
            continue
        fresh.discard(event.id)
        try:
            payload = event.payload(NotificationRequested)
        except ValidationError as exc:
            # Without a key and a channel there is no delivery to fail: dead-letter it.
            raise InvalidInput(f"invalid notification request {event.id}: {exc}") from exc
        requests.append(
            intake.Request(
                event.workspace,
                payload,
                event.correlationid,
                tracing.traceparent_for(event.correlationid) or event.traceparent,
            )
        )
    return requests


def contacts_subscription(ctx: ServiceContext, worker: DeliveryWorker) -> Subscription:
    """The contact projection: snapshots upserted, tombstones erased. A request that came
    before its contact waits for it: the contact's arrival makes it due and wakes the worker."""

    async def handle(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        store = NotifierStore(uow.session)
        now = datetime.now(UTC)
        snapshots: dict[str, list[dict[str, object]]] = {}
        woken = 0

        async def flush() -> None:
            nonlocal woken
            for workspace, snaps in snapshots.items():
                woken += await handlers.project_contacts(workspace, snaps, store, now)
            snapshots.clear()

        for event in events:
            if event.type == ContactDeleted.event_type:
                await flush()
                deleted = event.payload(ContactDeleted)
                await handlers.erase_contact(event.workspace, deleted.contact_id, store)
            elif event.type == ContactMerged.event_type:
                await flush()
                merged = event.payload(ContactMerged)
                await handlers.erase_projection(event.workspace, merged.merged_id, store)
                snapshots.setdefault(event.workspace, []).append(
                    merged.contact.model_dump(mode="json")
                )
            elif isinstance(snap := event.data.get("contact"), dict) and "id" in snap:
                snapshots.setdefault(event.workspace, []).append(snap)
        await flush()
        if woken:
            uow.after_commit(worker.wake)

    careful = ctx.batch_subscription("contacts", (topics.CONTACTS,), handle)
    if ctx.engine.dialect.name != "postgresql":
        return careful

    async def at_once(events: Sequence[Envelope]) -> None:
        """A batch of snapshots only (the usual: a new contact's events) is projected by one
        statement that commits by itself, its inbox claim included: one round trip where the
        transaction takes four (BEGIN, the upsert, the claim, COMMIT). Erasures, and a batch
        the statement fails (an event handled before breaks its claim, writing nothing), go
        the careful way."""
        rows = snapshots_only(events)
        if rows:
            ids = list(dict.fromkeys(e.id for e in events))
            try:
                async with ctx.sessions() as session:
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    store = NotifierStore(session)
                    woken = await store.project_claiming(
                        rows, datetime.now(UTC), careful.group, ids
                    )
            except Exception as exc:
                # An event handled before (a redelivery) is expected now and then; anything
                # else would make every batch pay twice, so it is told.
                level = logging.DEBUG if isinstance(exc, AlreadyHandled) else logging.WARNING
                log.log(
                    level, "the one-statement projection failed; the careful way", exc_info=True
                )
            else:
                if woken:
                    worker.wake()
                return
        await careful.handler(events)

    return replace(careful, handler=at_once)


def snapshots_only(events: Sequence[Envelope]) -> list[dict[str, Any]] | None:
    """The projection rows of `events` when each carries a snapshot and none erases (a
    deletion or a merge); else None."""
    snaps = []
    for event in events:
        snap = event.data.get("contact")
        if event.type in ERASING or not isinstance(snap, dict) or "id" not in snap:
            return None
        snaps.append((event.workspace, snap))
    return handlers.projection_rows(snaps)


ERASING = frozenset({ContactDeleted.event_type, ContactMerged.event_type})
