"""access's subscriptions: key uses reported by every service."""

from __future__ import annotations

from collections.abc import Sequence

from services.access import handlers
from shared.app import ServiceContext
from shared.bus import Subscription
from shared.events import topics
from shared.events.access import ApiKeyUsed
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork


async def on_key_used(event: Envelope, uow: UnitOfWork) -> None:
    if event.type == ApiKeyUsed.event_type:
        used = event.payload(ApiKeyUsed)
        await handlers.record_key_use(used.key_id, used.last_used_at, uow)


def subscriptions(ctx: ServiceContext) -> Sequence[Subscription]:
    return [ctx.subscription("usage", [topics.ACCESS_USAGE], on_key_used)]
