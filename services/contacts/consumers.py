"""contacts's bus subscriptions: envelope in, handler call."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from services.contacts.captures import handlers as captures
from services.contacts.commands import handlers as commands
from services.contacts.segments import handlers as segments
from services.contacts.settings import sweep_interval
from services.contacts.store import over, transaction
from shared.app import ServiceContext, each_in_turn
from shared.bus import OFF_PATH_GATHER_MS, Subscription
from shared.clock import Clock
from shared.errors import DomainError
from shared.events import topics
from shared.events.contact_commands import parse_command
from shared.events.envelope import Envelope
from shared.events.ingest import ENGAGEMENT_TYPES, LeadCaptured
from shared.events.scores import ScoreChanged, ScoreThresholdCrossed
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


LEAD_LANES = 3
# What the record keeps of scoring's events (churn risk is scoring's own business).
SCORE_TYPES = frozenset({ScoreChanged.event_type, ScoreThresholdCrossed.event_type})


class CapturedLeadEnvelope(Envelope):
    """A `lead.captured` envelope whose data was validated as `LeadCaptured` in the same pass
    as the envelope: one parse per lead instead of an envelope parse and then a validation of
    its data (`payload(LeadCaptured)` returns this very model)."""

    data: LeadCaptured  # type: ignore[assignment]  # the base's dict, narrowed to the payload


def decode_lead(raw: bytes) -> Envelope:
    """A message of the leads topic: a valid captured lead parsed once; anything else (another
    type, or a lead the handler will reject) as the plain envelope every consumer gets."""
    try:
        return CapturedLeadEnvelope.model_validate_json(raw)
    except ValidationError:
        return Envelope.from_bytes(raw)


def lane_of(event: Envelope, lanes: int) -> int:
    """The lane of a captured lead: its Kafka key (workspace + dedupe key) hashed, so every event
    of one key goes to the same lane, in its polled order."""
    if event.message_key is not None:
        return zlib.crc32(event.message_key.encode()) % lanes
    # An envelope handed over directly (not through the bus): the key ingest would give it.
    if isinstance(event, CapturedLeadEnvelope):
        dedupe_key = event.data.dedupe_key
    else:
        dedupe_key = str(event.data.get("dedupe_key", ""))
    key = topics.contact_key(event.workspace, dedupe_key)
    return zlib.crc32(key.encode()) % lanes


def lane_for(event: Envelope, lanes: int, rotating: Collection[str]) -> int:
    """The lane of a captured lead in a poll: by key (`lane_of`), except in a workspace whose
    new contacts get their owners by a rotation at capture. Each transaction there locks the
    team's row to its commit, so the workspace's lanes would only queue on that lock, a
    transaction each: the whole workspace goes to one lane instead, still in polled order."""
    if event.workspace in rotating:
        return zlib.crc32(event.workspace.encode()) % lanes
    return lane_of(event, lanes)


def leads_subscription(ctx: ServiceContext, clock: Clock, lanes: int = LEAD_LANES) -> Subscription:
    """Captured leads, a whole polled batch at once: one identity lookup, bulk inserts.

    The poll is split by key into `lanes` parts, each handled in its own transaction (with its
    own inbox insert) concurrently, so one lane's database work overlaps another's Python
    work. Per-key order holds (a key lives in one lane, as it lives in one partition); two
    lanes meeting on one person through different keys serialise on the row locks and unique
    constraints exactly like two partitions or two replicas do. The poll is committed to Kafka
    only after every lane committed; if one fails, the dispatcher retries the poll event by
    event and the inbox turns what other lanes already applied into no-ops. A workspace that
    assigns owners at capture is kept in one lane (`lane_for`): its lanes would serialise on
    the rotation's lock.
    """
    # Workspaces whose last capture of new contacts locked a rotation: learnt from the
    # captures themselves, so knowing costs no read.
    rotating: set[str] = set()

    async def handle(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        leads = [
            captures.CapturedLead(e.workspace, e.payload(LeadCaptured), e.correlationid)
            for e in events
            if e.type == LeadCaptured.event_type
        ]
        rotated = await captures.capture_leads(leads, over(uow), clock())
        for workspace, locked in rotated.items():
            if locked:
                rotating.add(workspace)
            else:
                rotating.discard(workspace)

    single = ctx.batch_subscription("leads", (topics.LEADS,), handle)
    if ctx.engine.dialect.name != "postgresql":
        lanes = 1  # SQLite has one writer at a time: concurrent transactions would only collide

    async def handle_in_lanes(events: Sequence[Envelope]) -> None:
        if lanes <= 1 or len(events) < 2 * lanes:
            await single.handler(events)
            return
        parts: list[list[Envelope]] = [[] for _ in range(lanes)]
        for event in events:
            parts[lane_for(event, lanes, rotating)].append(event)
        outcomes = await asyncio.gather(
            *(single.handler(part) for part in parts if part), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    return Subscription(single.group, single.topics, handle_in_lanes, decode_lead)


def subscriptions(clock: Clock) -> Callable[[ServiceContext], Sequence[Subscription]]:
    """Every consumer group of the service, reading the time from `clock`."""

    async def on_engagement(event: Envelope, uow: UnitOfWork) -> None:
        model = ENGAGEMENT_TYPES.get(event.type)
        if model is None:
            log.info("ignoring engagement type", extra={"type": event.type})
            return
        await captures.record_engagement(event.workspace, event.payload(model), over(uow), clock())

    def reports(events: Sequence[Envelope]) -> list[captures.Report]:
        return [captures.Report(e.workspace, e.type, e.data) for e in events]

    async def on_scores(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        await captures.record_scores(reports(events), over(uow), clock())

    async def on_notifications(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        await captures.record_notifications(reports(events), over(uow), clock())

    def build(ctx: ServiceContext) -> Sequence[Subscription]:
        async def on_command(event: Envelope, uow: UnitOfWork) -> None:
            try:
                await commands.handle_command(
                    event.workspace, parse_command(event), over(uow), clock()
                )
            except (DomainError, ValueError) as exc:
                # Tell the sender before the command is dead-lettered: straight on the bus, as
                # the DLQ itself is written, because this transaction rolls back. A crash in
                # between redelivers the command and repeats both; the id is the same each time.
                rejected = commands.command_rejected(event, exc)
                await ctx.bus.publish(topics.CONTACTS, rejected[0], rejected[1])
                raise

        one_by_one = each_in_turn(on_command)

        async def on_commands(events: Sequence[Envelope], uow: UnitOfWork) -> None:
            # A poll at once, set-based. Should one command fail, the transaction rolls back
            # and the dispatcher retries the poll one event at a time: that path tells the
            # refused command's sender and dead-letters it alone.
            if len(events) == 1:
                await one_by_one(events, uow)
                return
            polled = [
                commands.PolledCommand(e.workspace, parse_command(e), e.correlationid)
                for e in events
            ]
            await commands.handle_commands(polled, over(uow), clock())

        return [
            leads_subscription(ctx, clock),
            # Commands carry workflow steps (an owner to assign, a field to set): at once. The
            # rest is beside a lead's path: timelines, scores, delivery outcomes.
            ctx.batch_subscription("commands", [topics.CONTACT_COMMANDS], on_commands),
            ctx.subscription(
                "engagement", [topics.ENGAGEMENT], on_engagement, gather_ms=OFF_PATH_GATHER_MS
            ),
            ctx.batch_subscription(
                "scores", [topics.SCORES], on_scores, SCORE_TYPES, OFF_PATH_GATHER_MS
            ),
            ctx.batch_subscription(
                "notifications",
                [topics.NOTIFICATIONS],
                on_notifications,
                gather_ms=OFF_PATH_GATHER_MS,
            ),
        ]

    return build


def background(
    clock: Clock, interval_s: float | None = None
) -> Callable[[ServiceContext], Sequence[Callable[[], Coroutine[Any, Any, None]]]]:
    """The periodic segment sweep: time-based conditions change without any contact change."""

    def build(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        every = interval_s if interval_s is not None else sweep_interval(ctx.settings)

        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    await sweep_once(ctx, clock)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("segment sweep failed, will retry", exc_info=True)

        return [sweep_forever]

    return build


async def sweep_once(ctx: ServiceContext, clock: Clock) -> int:
    """One reconciliation of every segment, in one transaction; skipped while another replica
    sweeps (so each entry or exit is published once)."""
    async with transaction(ctx.uow()) as tx:
        if not await tx.store.take_sweep_lock():
            return 0
        return await segments.sweep_segments(tx, clock())
