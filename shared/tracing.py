"""OpenTelemetry traces across every hop: HTTP request → outbox → relay publish → consumer.

The W3C `traceparent` travels in each envelope (the producer's span) and as a Kafka header
(the relay's publish span), so one lead's path through every service is one trace. A service
always makes trace and span ids (they are in its JSON logs and on its events); spans are only
recorded and exported when an OTLP endpoint is configured (`LEADWIRE_OTLP_ENDPOINT` or the
standard `OTEL_EXPORTER_OTLP_ENDPOINT`), so by default a span costs a few microseconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBasedTraceIdRatio
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import Attributes

from shared.ids import process_random

SCOPE = "leadwire"
_random = process_random()  # trace and span ids
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_TRACEPARENT_KEY = b',"traceparent":"'
_TRACEPARENT_LEN = 55  # 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", re.IGNORECASE)
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16


class _State:
    tracer: Tracer = trace.NoOpTracer()
    provider: TracerProvider | None = None
    # False while no span is ever recorded (no exporter): the per-event spans of the relay and
    # the consumers are then made directly, ids only, without the SDK's sampler and context.
    recording = False


_state = _State()
# The consumer spans of the batch being handled, by correlation id: a batch handler emits an
# event per lead within one transaction, and the event joins the trace of the lead it came from.
_handling: ContextVar[Mapping[str, Span] | None] = ContextVar("handling", default=None)


def configure(service: str, otlp_endpoint: str | None = None) -> None:
    """Set this process's tracer once (the first service to start names the resource)."""
    if _state.provider is not None:
        return
    endpoint = (
        otlp_endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    resource = Resource.create({"service.name": service})
    if not endpoint:
        # Ids made and propagated, nothing recorded: no exporter would ever read the spans.
        install(TracerProvider(resource=resource, sampler=ALWAYS_OFF), recording=False)
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    ratio = float(os.environ.get("LEADWIRE_TRACE_SAMPLE_RATIO", "1.0"))
    provider = TracerProvider(resource=resource, sampler=ParentBasedTraceIdRatio(ratio))
    traces_url = otlp_endpoint.rstrip("/") + "/v1/traces" if otlp_endpoint else None
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    install(provider)


def install(provider: TracerProvider, recording: bool = True) -> None:
    """Use `provider` for every span of this process (tests install an in-memory one);
    `recording=False` says its sampler never records, so spans can be made cheaper."""
    _state.provider = provider
    _state.tracer = provider.get_tracer(SCOPE)
    _state.recording = recording


def shutdown() -> None:
    """Flush and forget the provider (a test's, or the process's at exit)."""
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.provider = None
    _state.tracer = trace.NoOpTracer()
    _state.recording = False


def tracer() -> Tracer:
    return _state.tracer


def format_traceparent(context: SpanContext) -> str | None:
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """A remote span context from a W3C `traceparent` (version 00), None if malformed."""
    if value is None or len(value) != _TRACEPARENT_LEN or value[:3] != "00-":
        return None
    try:
        trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:], 16)
    except ValueError:
        return None
    found = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return found if found.is_valid else None


class _IdsOnly(NonRecordingSpan):
    """A span while nothing is recorded: its ids, kept as the `traceparent` that carries them,
    which is all that its uses (headers, envelopes, log lines) read. The `SpanContext`
    OpenTelemetry's API asks for is made only when asked: making one per event cost more
    than the rest of its span (a relay publishes and a consumer starts one per event)."""

    def __init__(self, traceparent: str) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        self.traceparent = traceparent
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        if self._made is None:
            tp = self.traceparent
            self._made = SpanContext(int(tp[3:35], 16), int(tp[36:52], 16), False, _UNSAMPLED)
        return self._made


def _trace_hex(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C `traceparent` (version 00), in lower-case hex."""
    found = _TRACEPARENT.fullmatch(traceparent) if traceparent is not None else None
    if found is None or found[1] == _NO_TRACE or found[2] == _NO_SPAN:
        return None
    return found[1].lower()


def _start(name: str, traceparent: str | None, kind: SpanKind, attributes: Attributes) -> Span:
    """A span continuing `traceparent` (a new trace when None or malformed)."""
    if _state.recording:
        return _state.tracer.start_span(
            name, context=parent(traceparent), kind=kind, attributes=attributes
        )
    return _ids_only(traceparent)


def _ids_only(traceparent: str | None) -> _IdsOnly:
    """A span continuing `traceparent` (a new trace when None or malformed) while nothing is
    recorded: only its ids matter (logs, headers, envelopes). The SDK would give the same (a
    non-recording span with new ids) through a sampler and a context per call."""
    trace_hex = _trace_hex(traceparent) or f"{_random.getrandbits(128) or 1:032x}"
    return _IdsOnly(f"00-{trace_hex}-{_random.getrandbits(64) or 1:016x}-00")


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` of `span` (None for an invalid one)."""
    if isinstance(span, _IdsOnly):
        return span.traceparent
    return format_traceparent(span.get_span_context())


def parent(traceparent: str | None) -> Context | None:
    """The context to start a span in, continuing `traceparent` (a new trace when None)."""
    remote = parse_traceparent(traceparent)
    if remote is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(remote))


def traceparent_in(payload: bytes) -> str | None:
    """The `traceparent` of an encoded envelope, read from its tail: envelopes are written with
    it as their last attribute (see `Envelope`), so no parse of the whole event is needed."""
    start = len(payload) - len(_TRACEPARENT_KEY) - _TRACEPARENT_LEN - 2
    if (
        payload.endswith(b'"}')
        and payload[start : start + len(_TRACEPARENT_KEY)] == _TRACEPARENT_KEY
    ):
        return payload[start + len(_TRACEPARENT_KEY) : -2].decode("ascii", "replace")
    if b'"traceparent":"' not in payload:
        return None
    # Written by another producer, in another attribute order: parse it whole.
    try:
        found = orjson.loads(payload).get("traceparent")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def current_traceparent() -> str | None:
    """The traceparent an event emitted now continues: the consumer span of the event it came
    from (batch handlers), else the current span (an HTTP request, a handled event)."""
    return traceparent_of(trace.get_current_span())


def traceparent_for(correlation_id: str) -> str | None:
    """The traceparent of an event emitted now with `correlation_id` (see `current_traceparent`)."""
    handling = _handling.get()
    if handling is not None:
        span = handling.get(correlation_id)
        if span is not None:
            return traceparent_of(span)
    return current_traceparent()


@contextmanager
def publish_spans(messages: Sequence[tuple[str, str, bytes]]) -> Iterator[list[str | None]]:
    """A `publish` span per outgoing event, a child of the span that produced it (the
    envelope's `traceparent`); gives the traceparents for the records' headers, so consumers
    continue from the publish. The spans end when the broker has acknowledged the batch."""
    if not _state.recording:  # names and attributes only matter to a recorded span
        spans: list[Span] = [_ids_only(traceparent_in(value)) for _, _, value in messages]
    else:
        spans = [
            _start(
                f"publish {topic}",
                traceparent_in(value),
                SpanKind.PRODUCER,
                {"messaging.destination.name": topic},
            )
            for topic, _, value in messages
        ]
    try:
        yield [traceparent_of(span) for span in spans]
    except BaseException as exc:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        for span in spans:
            span.end()


def start_consumer_spans(
    topics: Sequence[str], traceparents: Sequence[str | None], group: str
) -> list[Span]:
    """One `process` span per polled event, each a child of the publish that sent it."""
    if not _state.recording:
        return [_ids_only(traceparent) for traceparent in traceparents]
    attributes = {"messaging.consumer.group.name": group}
    return [
        _start(f"process {topic}", traceparent, SpanKind.CONSUMER, attributes)
        for topic, traceparent in zip(topics, traceparents, strict=True)
    ]


@contextmanager
def handling(spans: Mapping[str, Span]) -> Iterator[None]:
    """While a batch is handled: its events' consumer spans, by correlation id."""
    token = _handling.set(spans)
    try:
        yield
    finally:
        _handling.reset(token)


@contextmanager
def handling_event(correlation_id: str) -> Iterator[None]:
    """The consumer span of the event being handled, made current (logs, emitted events)."""
    handling = _handling.get()
    span = handling.get(correlation_id) if handling is not None else None
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False):
        yield


def start_request_span(method: str, headers: Sequence[tuple[bytes, bytes]]) -> Span:
    """The server span of an HTTP request, continuing the caller's `traceparent` if any."""
    traceparent = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value.decode("latin-1")
            break
    return _start(method, traceparent, SpanKind.SERVER, {"http.request.method": method})


def end_request_span(span: Span, method: str, route: str, status: int) -> None:
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def links(traceparents: Sequence[str | None]) -> list[Link]:
    """Links from a span doing work for many traces (a group commit) to each of them."""
    found = (parse_traceparent(t) for t in traceparents)
    return [Link(context) for context in found if context is not None]


def use_span(span: Span) -> AbstractContextManager[Span]:
    """Make `span` current without ending it on exit."""
    return trace.use_span(span, end_on_exit=False)


def failed(span: Span, error: str) -> None:
    span.set_status(Status(StatusCode.ERROR, error[:200]))


def trace_ids() -> tuple[str, str] | None:
    """The current trace and span id in hex, for log lines."""
    span = trace.get_current_span()
    if isinstance(span, _IdsOnly):
        return span.traceparent[3:35], span.traceparent[36:52]
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
