"""The bus interface both transports implement, and the retry/DLQ policy they share."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from opentelemetry.trace import Span

from shared import metrics, tracing
from shared.events.envelope import CLOUDEVENTS_JSON, Envelope, peek_type
from shared.logs import correlation_id_var, event_id_var, workspace_var
from shared.transient import is_transient

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Envelope]], Awaitable[None]]
# Every published event is a structured-mode CloudEvent (Kafka protocol binding): without this
# header a CloudEvents receiver assumes binary mode and finds no event.
EVENT_HEADERS: dict[str, str] = {"content-type": CLOUDEVENTS_JSON}


@dataclass(frozen=True)
class Record:
    """One message as stored on a partition: the bytes on the wire plus string headers."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


# What a consumer beside a lead's path (scoring, timelines, outcomes, submission pairing) may
# wait to gather a batch. Its work then no longer runs at the same moment as the next hop of
# the lead that caused it, on a machine of few cores, and takes fewer, larger batches.
OFF_PATH_GATHER_MS = 250


@dataclass(frozen=True)
class Subscription:
    """A consumer group (`<service>.<purpose>`) reading some topics with a batch handler.

    `decode` turns a message's bytes into its envelope; a subscription that knows its payload
    type can validate the payload in the same pass (a `ValueError` dead-letters the message).
    `gates_readiness=False` marks work beside the service's job (ingest's erasures): its
    consumer waiting for the bus does not make the service unready.
    `gather_ms` lets a consumer whose work may lag take fewer, larger polls (see below).
    `types`, when given, are the only event types the handler is given: the others are
    passed over before they are decoded or handled (their offsets are committed all the
    same), so a reader of a busy topic that wants a few of its types pays next to nothing
    for the rest, and a poll of none of them opens no transaction.
    """

    group: str
    topics: tuple[str, ...]
    handler: BatchHandler
    decode: Callable[[bytes], Envelope] = Envelope.from_bytes
    gates_readiness: bool = True
    types: frozenset[str] | None = None
    # For work that may lag (ingest's erasures): how long the broker may hold a fetch to
    # gather a larger batch. 0 answers as soon as one event is there (every hop of a lead).
    gather_ms: int = 0

    def wants(self, record: Record) -> bool:
        """False for a record of a type this subscription does not handle (a cheap look at
        its bytes; a record that cannot be looked at so is decoded and checked then)."""
        if self.types is None:
            return True
        found = peek_type(record.value)
        return found is None or found in self.types


class Consumer(Protocol):
    @property
    def running(self) -> bool: ...

    @property
    def ready(self) -> bool:
        """Can do its job now: running, a member of its group with partitions assigned, and not
        waiting out an outage of a dependency its handler needs."""
        ...

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this group member currently owns."""
        ...

    async def stop(self) -> None: ...


class Follower(Protocol):
    """A reader of one whole topic outside any consumer group (every replica runs its own)."""

    @property
    def running(self) -> bool: ...

    @property
    def caught_up(self) -> bool:
        """Whether it has handled every record the topic held when it started."""
        ...

    async def stop(self) -> None: ...


RecordHandler = Callable[[Record], Awaitable[None]]


class Bus(Protocol):
    """Publish keyed envelopes; consume them in groups, at least once, in order per key."""

    # Whether published messages outlive this process (Kafka) or vanish with it (in-process).
    durable: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None: ...

    async def publish_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        traceparents: Sequence[str | None] | None = None,
    ) -> None:
        """Publish already-encoded (topic, key, value) messages and wait until all are acked;
        `traceparents` (one per message) go on the records' `traceparent` header."""
        ...

    async def subscribe(self, subscription: Subscription) -> Consumer: ...

    async def ping(self) -> bool: ...

    async def follow(self, topic: str, handle: RecordHandler, from_start: bool = True) -> Follower:
        """Hand every record of `topic` (from its start, or only new ones) to `handle`, in
        each partition's order, in this process alone: for state every replica must hold."""
        ...

    def missing_topics(self) -> tuple[str, ...]:
        """Topics this process needs that the transport lacks (as of the last ping)."""
        ...

    async def dead_letters(self, topic: str) -> list[Record]:
        """Everything parked on a topic's DLQ, with the error headers, for inspection or replay."""
        ...


class Dispatcher:
    """Runs a subscription's handler over one polled batch with retries and a DLQ.

    The whole batch is tried first (one transaction per batch). If it fails, events are
    retried one by one in their polled order, so a single poison event goes to the DLQ without
    holding back the others; per-key order is kept because the poll waits while one retries.

    A failure of the infrastructure (`shared.transient`: database or broker unreachable,
    connection reset, timeout, serialization conflict) is not the event's fault: the same
    events are tried again after a capped backoff for as long as the outage lasts, the consumer
    reports itself not ready meanwhile, and none of it counts toward the poison limit. Only
    failures the same event would cause again reach the DLQ, after `max_retries` tries.
    """

    def __init__(
        self,
        subscription: Subscription,
        send_to_dlq: Callable[[Record, str, int], Awaitable[None]],
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.subscription = subscription
        self.send_to_dlq = send_to_dlq
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # While set, the handler's dependencies are down: the consumer waits and is not ready.
        self.outage_since: float | None = None

    @property
    def waiting_on_dependency(self) -> bool:
        return self.outage_since is not None

    async def dispatch(self, records: Sequence[Record]) -> None:
        parsed: list[tuple[Record, Envelope]] = []
        types = self.subscription.types
        for record in records:
            if not self.subscription.wants(record):
                continue
            try:
                envelope = self.subscription.decode(record.value).delivered_under(record.key)
            except ValueError as exc:
                await self._dead_letter(record, f"invalid_envelope: {exc}", 1)
                continue
            if types is None or envelope.type in types:
                parsed.append((record, envelope))
        if not parsed:
            return
        started = time.perf_counter()
        # A `process` span per event, continuing the publish that sent it (header, else the
        # envelope's own trace context); events the handler emits join their cause's trace.
        spans = tracing.start_consumer_spans(
            [record.topic for record, _ in parsed],
            [record.headers.get("traceparent") or env.traceparent for record, env in parsed],
            self.subscription.group,
        )
        causes = {env.correlationid: span for (_, env), span in zip(parsed, spans, strict=True)}
        try:
            with tracing.handling(causes):
                failure = await self._attempt([env for _, env in parsed])
                if failure is not None:
                    log.warning("batch failed, retrying events one by one", exc_info=failure)
                    for (record, envelope), span in zip(parsed, spans, strict=True):
                        await self._dispatch_one(record, envelope, span)
        finally:
            for span in spans:
                span.end()
            metrics.HANDLER_SECONDS.labels(self.subscription.group).observe(
                time.perf_counter() - started
            )
        metrics.EVENTS_CONSUMED.labels(self.subscription.group).inc(len(parsed))

    async def _attempt(self, envelopes: Sequence[Envelope]) -> Exception | None:
        """Run the handler until it succeeds (None) or fails for a reason of its own (the
        error); an unavailable dependency is waited out, however long it stays away."""
        outage = 0
        while True:
            try:
                await self.subscription.handler(envelopes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    self._dependencies_back()
                    return exc
                outage += 1
                self._dependency_down(exc, outage)
                await asyncio.sleep(min(self.backoff_s * 2 ** (outage - 1), self.max_backoff_s))
            else:
                self._dependencies_back()
                return None

    def _dependency_down(self, exc: Exception, failures: int) -> None:
        group = self.subscription.group
        metrics.CONSUMER_TRANSIENT_FAILURES.labels(group).inc()
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            metrics.CONSUMER_WAITING.labels(group).set(1)
        # The first failure and then every tenth: an outage of minutes stays readable.
        if failures % 10 == 1:
            log.warning(
                "dependency unavailable, holding the events",
                extra={"group": group, "failures": failures, "error": describe(exc)},
            )

    def _dependencies_back(self) -> None:
        if self.outage_since is None:
            return
        group = self.subscription.group
        log.info(
            "dependency back, resuming",
            extra={"group": group, "outage_s": round(time.monotonic() - self.outage_since, 3)},
        )
        self.outage_since = None
        metrics.CONSUMER_WAITING.labels(group).set(0)

    async def _dispatch_one(self, record: Record, envelope: Envelope, span: Span) -> None:
        with tracing.use_span(span):
            await self._retry_one(record, envelope, span)

    async def _retry_one(self, record: Record, envelope: Envelope, span: Span) -> None:
        tokens = (
            workspace_var.set(envelope.workspace),
            event_id_var.set(envelope.id),
            correlation_id_var.set(envelope.correlationid),
        )
        try:
            for attempt in range(1, self.max_retries + 1):
                exc = await self._attempt([envelope])
                if exc is None:
                    return
                error = describe(exc)
                log.warning("handler failed", extra={"attempt": attempt, "error": error})
                # A domain error (an invalid command, say) fails the same way every time.
                if attempt == self.max_retries or getattr(exc, "permanent", False):
                    tracing.failed(span, error)
                    await self._dead_letter(record, error, attempt)
                    return
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
        finally:
            workspace_var.reset(tokens[0])
            event_id_var.reset(tokens[1])
            correlation_id_var.reset(tokens[2])

    async def _dead_letter(self, record: Record, error: str, attempts: int) -> None:
        log.error("event dead-lettered", extra={"topic": record.topic, "error": error})
        metrics.EVENTS_DEAD_LETTERED.labels(self.subscription.group).inc()
        await self.send_to_dlq(record, error, attempts)


def describe(exc: BaseException) -> str:
    """The error text parked with a dead letter: a domain error's code, message and field errors."""
    code = getattr(exc, "code", None)
    extra = getattr(exc, "extra", None)
    if isinstance(code, str) and isinstance(extra, dict):
        text = f"{code}: {exc}"
        if extra.get("errors"):
            text += " " + orjson.dumps(extra["errors"], default=str).decode()
        return text
    return "".join(traceback.format_exception_only(exc)).strip()


def dlq_headers(record: Record, group: str, error: str, attempts: int) -> dict[str, str]:
    """The record's own headers (content type, trace context) and headers that tell an
    operator why and where it was dead-lettered."""
    return {
        **record.headers,
        "leadwire-error": error[:2000],
        "leadwire-attempts": str(attempts),
        "leadwire-group": group,
        "leadwire-original-topic": record.topic,
        "leadwire-original-partition": str(record.partition),
        "leadwire-original-offset": str(record.offset),
    }
