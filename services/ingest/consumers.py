"""ingest's bus subscriptions: it reads `leadwire.contacts.v1` for erasures only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.ingest.privacy import handlers as privacy
from services.ingest.store import over
from shared.app import ServiceContext
from shared.bus import Subscription
from shared.events import topics
from shared.events.contacts import ContactDeleted
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork


def erasure_subscription(ctx: ServiceContext) -> Subscription:
    """`contact.deleted` → erase the person's submissions; the topic's other events (a dozen
    for every lead) are passed over undecoded, with no transaction or inbox row for them."""

    async def on_deleted(event: Envelope, uow: UnitOfWork) -> None:
        await privacy.erase_person(event.workspace, event.payload(ContactDeleted), over(uow))

    single = ctx.subscription(
        "erasures", (topics.CONTACTS,), on_deleted, types={ContactDeleted.event_type}
    )
    # ingest's job is taking leads in, Kafka or not (they wait in the outbox): a bus outage
    # delays erasures until it is over, it does not make ingest unready. Nor does an erasure
    # need to start within milliseconds: fetches gather up to half a second of the topic.
    return replace(single, gates_readiness=False, gather_ms=500)


def subscriptions(ctx: ServiceContext) -> Sequence[Subscription]:
    return [erasure_subscription(ctx)]
