"""scoring's bus subscriptions and time-driven loops: thin, envelope in → handler call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.scoring import handlers
from services.scoring.contacts import handlers as contact_changes
from services.scoring.settings import scoring_settings
from services.scoring.store import SqlStore
from shared.app import ServiceContext
from shared.bus import OFF_PATH_GATHER_MS, Subscription
from shared.claims import drain
from shared.clock import Clock
from shared.events import topics
from shared.events.contacts import (
    CONTACT_EVENT_TYPES,
    ContactDeleted,
    ContactMerged,
    ContactSnapshot,
)
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import ENGAGEMENT_TYPES, Engagement
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
# Identity and time travel beside the ledger row, not inside its data.
_NOT_DATA = {"engagement_id", "email", "contact_id", "occurred_at"}


class ParsedEnvelope(Envelope):
    """An envelope whose payload was validated when it was decoded (None: a type we skip).
    The payload rides in pydantic's private slot, undeclared (as `Envelope.message_key`
    does): a declared private attribute would cost every decode pydantic's private set-up."""

    @property
    def parsed(self) -> EventPayload | None:
        private = self.__pydantic_private__
        return private.get("parsed") if private else None

    def keep(self, payload: EventPayload) -> None:
        private = self.__pydantic_private__
        if private is None:
            object.__setattr__(self, "__pydantic_private__", {"parsed": payload})
        else:
            private["parsed"] = payload


def decoder(types: Mapping[str, type[EventPayload]]) -> Callable[[bytes], Envelope]:
    """Decode and validate a known event type in one place: a malformed payload raises
    ValueError there, which parks the message in the DLQ with the reason."""

    def decode(raw: bytes) -> Envelope:
        envelope = ParsedEnvelope.model_validate_json(raw)
        model = types.get(envelope.type)
        if model is not None:
            payload = envelope.payload(model)
            if isinstance(payload, Engagement) and not (payload.contact_id or payload.email):
                raise ValueError("engagement names neither contact_id nor email")
            envelope.keep(payload)
        return envelope

    return decode


def engagement_in(event: Envelope) -> handlers.EngagementIn | None:
    payload = event.parsed if isinstance(event, ParsedEnvelope) else None
    if not isinstance(payload, Engagement):
        return None  # an engagement type scoring does not know: not ours to judge
    data = {k: v for k, v in event.data.items() if k not in _NOT_DATA}
    return handlers.EngagementIn(
        event.workspace,
        event.type,
        payload.contact_id,
        payload.email,
        payload.occurred_at,
        data,
        event.correlationid,
    )


# The contact events scoring acts on: those carrying the contact's snapshot, and deletes.
CONTACT_CHANGES = frozenset(
    name
    for name, model in CONTACT_EVENT_TYPES.items()
    if getattr(model.model_fields.get("contact"), "annotation", None) is ContactSnapshot
) | {ContactDeleted.event_type}


def contact_change(event: Envelope) -> contact_changes.ContactChange | None:
    """A snapshot, merge or delete scoring acts on; None for the rest (tasks, segments, …)."""
    payload = event.parsed if isinstance(event, ParsedEnvelope) else None
    if isinstance(payload, ContactMerged | ContactDeleted):
        return contact_changes.ContactChange(event.workspace, payload, event.correlationid)
    snapshot = getattr(payload, "contact", None)
    if isinstance(snapshot, ContactSnapshot):
        return contact_changes.ContactChange(event.workspace, snapshot, event.correlationid)
    return None


def subscriptions(clock: Clock) -> Callable[[ServiceContext], Sequence[Subscription]]:
    """Engagement and contact changes, each a polled batch per transaction."""

    async def on_engagement(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        batch = [e for e in map(engagement_in, events) if e is not None]
        if batch:
            await handlers.score_engagement(batch, SqlStore(uow.session), uow, clock())

    async def on_contacts(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        changes = [c for c in map(contact_change, events) if c is not None]
        if changes:
            await contact_changes.on_contact_changes(changes, SqlStore(uow.session), uow, clock())

    def build(ctx: ServiceContext) -> Sequence[Subscription]:
        # Scores come beside a lead's path, not on it: both consumers gather their batches.
        engagement = ctx.batch_subscription(
            "engagement", [topics.ENGAGEMENT], on_engagement, ENGAGEMENT_TYPES, OFF_PATH_GATHER_MS
        )
        # Tasks, segments, command refusals: passed over before they are decoded.
        contacts = ctx.batch_subscription(
            "contacts", [topics.CONTACTS], on_contacts, CONTACT_CHANGES, OFF_PATH_GATHER_MS
        )
        # Payloads validated as they are decoded (a bad one dead-letters at once).
        return [
            replace(engagement, decode=decoder(ENGAGEMENT_TYPES)),
            replace(contacts, decode=decoder(CONTACT_EVENT_TYPES)),
        ]

    return build


async def fire_timers_once(ctx: ServiceContext, now: datetime, limit: int) -> int:
    async with ctx.uow() as uow:
        return await handlers.fire_due_timers(SqlStore(uow.session), uow, now, limit)


async def next_timer_due(ctx: ServiceContext) -> datetime | None:
    async with ctx.sessions() as session:
        return await SqlStore(session).next_due()


async def rescore_once(ctx: ServiceContext, now: datetime, chunk: int) -> bool:
    async with ctx.uow() as uow:
        return await handlers.rescore_next_chunk(SqlStore(uow.session), uow, now, chunk)


def background(
    clock: Clock,
) -> Callable[[ServiceContext], Sequence[Callable[[], Coroutine[Any, Any, None]]]]:
    """The timer loop (decay crossings, RFM reassessments) and the rescore loop."""

    def build(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        settings = scoring_settings(ctx.settings)

        # On PostgreSQL several transactions claim due timers side by side (SKIP LOCKED hands
        # each its own), so one's database round trips overlap another's work: 10,000 timers
        # due at one instant are out in a round or two. SQLite has one writer: one claimer.
        claimers = 1 if ctx.engine.dialect.name != "postgresql" else settings.scoring_timer_claimers
        batch = settings.scoring_timer_batch

        async def claim_round() -> int:
            try:
                return await fire_timers_once(ctx, clock(), batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("timer round failed, will retry", exc_info=True)
                return 0

        async def until_next_due() -> float:
            """How long to sleep: until the earliest timer is due, at most the poll interval
            (which bounds how late a timer another replica sets for sooner is seen)."""
            try:
                due = await next_timer_due(ctx)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("timer lookup failed, will retry", exc_info=True)
                return settings.scoring_timer_poll_s
            if due is None:
                return settings.scoring_timer_poll_s
            # A timer already due was skipped (its contact busy, or another replica's): a short
            # pause, not a spin.
            wait = max((due - clock()).total_seconds(), 0.01)
            return min(wait, settings.scoring_timer_poll_s)

        async def timers_forever() -> None:
            while True:
                await drain(claim_round, batch, claimers)
                await asyncio.sleep(await until_next_due())

        async def rescores_forever() -> None:
            while True:
                try:
                    busy = await rescore_once(ctx, clock(), settings.scoring_rescore_chunk)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("rescore chunk failed, will retry", exc_info=True)
                    busy = False
                if not busy:
                    await asyncio.sleep(settings.scoring_rescore_poll_s)

        return [timers_forever, rescores_forever]

    return build
