"""notifier's bus subscriptions: envelope in, handler call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.app import ServiceContext
from shared.bus import Subscription
from shared.events import topics
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


async def on_requests(event: Envelope, uow: UnitOfWork) -> None:
    """Skeleton: the event is recorded in the inbox; this service's domain handles it later."""
    log.debug("received", extra={"type": event.type})


async def on_contacts(event: Envelope, uow: UnitOfWork) -> None:
    """Skeleton: the event is recorded in the inbox; this service's domain handles it later."""
    log.debug("received", extra={"type": event.type})


def subscriptions(ctx: ServiceContext) -> Sequence[Subscription]:
    return [
        ctx.subscription("requests", [topics.NOTIFICATION_REQUESTS], on_requests),
        ctx.subscription("contacts", [topics.CONTACTS], on_contacts),
    ]
