"""Trace context: read from encoded envelopes, carried into log lines."""

from __future__ import annotations

import logging
from typing import ClassVar

import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from shared import tracing
from shared.events.envelope import Envelope, EventPayload, PreparedEnvelope
from shared.logs import JsonFormatter
from tests.helpers import made_here_and_in_a_fork

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TestTraceparentInEnvelopes:
    def test_read_from_the_tail_of_a_prepared_envelope(self) -> None:
        envelope = PreparedEnvelope.prepare(
            "lead.captured", {"traceparent": "not this one"}, source="s", workspace="w"
        )
        envelope.traceparent = TRACEPARENT
        assert tracing.traceparent_in(envelope.to_bytes()) == TRACEPARENT

    def test_read_from_an_envelope_with_extension_attributes_after_it(self) -> None:
        envelope = Envelope(source="s", type="t", workspace="w", correlationid="c")
        envelope.traceparent = TRACEPARENT
        raw = orjson.loads(envelope.to_bytes()) | {"partnerext": "x"}
        assert tracing.traceparent_in(orjson.dumps(raw)) == TRACEPARENT

    def test_none_when_the_envelope_has_none(self) -> None:
        envelope = Envelope(source="s", type="t", workspace="w", correlationid="c")
        assert tracing.traceparent_in(envelope.to_bytes()) is None
        assert tracing.traceparent_in(b"{not json") is None

    def test_a_malformed_traceparent_starts_a_new_trace(self) -> None:
        assert tracing.parse_traceparent("00-zz-b7ad6b7169203331-01") is None
        assert tracing.parse_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
        assert tracing.parse_traceparent(TRACEPARENT) is not None


class TestEventsContinueTheCurrentTrace:
    def test_an_envelope_made_in_a_span_carries_it(self) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF))
        try:
            with tracing.tracer().start_as_current_span("request") as span:
                envelope = Envelope.of(_Payload(), source="s", workspace="w", correlationid="corr")
            assert envelope.traceparent == tracing.format_traceparent(span.get_span_context())
        finally:
            tracing.shutdown()


class TestLogLines:
    def test_a_line_logged_in_a_span_has_its_trace_and_span_id(self) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF))
        try:
            record = logging.LogRecord("x", logging.INFO, "f", 1, "hello", None, None)
            with tracing.tracer().start_as_current_span("work") as span:
                line = orjson.loads(JsonFormatter().format(record))
            context = span.get_span_context()
            assert line["trace_id"] == f"{context.trace_id:032x}"
            assert line["span_id"] == f"{context.span_id:016x}"
            assert "trace_id" not in orjson.loads(JsonFormatter().format(record))
        finally:
            tracing.shutdown()


class _Payload(EventPayload):
    event_type: ClassVar[str] = "thing.happened"


class TestSpansWhenNothingIsRecorded:
    def test_publish_and_consumer_spans_continue_the_trace_with_new_span_ids(self) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF), recording=False)
        try:
            envelope = Envelope(source="s", type="t", workspace="w", correlationid="c")
            envelope.traceparent = TRACEPARENT
            message = ("leadwire.leads.v1", "k", envelope.to_bytes())
            with tracing.publish_spans([message]) as [published]:
                assert published is not None
            [consumed] = tracing.start_consumer_spans(["leadwire.leads.v1"], [published], "g")
            trace_id = TRACEPARENT.split("-")[1]
            assert published.split("-")[1] == trace_id
            assert published.split("-")[2] != TRACEPARENT.split("-")[2]
            assert f"{consumed.get_span_context().trace_id:032x}" == trace_id
            assert tracing.format_traceparent(consumed.get_span_context()) != published
        finally:
            tracing.shutdown()

    def test_a_forked_child_does_not_repeat_its_parents_trace_ids(self) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF), recording=False)
        try:

            def new_traces() -> list[str]:
                spans = tracing.start_consumer_spans(["t"] * 3, [None] * 3, "g")
                return [tracing.traceparent_of(span) or "" for span in spans]

            parents, childs = made_here_and_in_a_fork(new_traces)
            assert len(childs) == 3
            assert not parents & childs
        finally:
            tracing.shutdown()

    def test_a_malformed_or_empty_parent_starts_a_new_trace_and_upper_case_is_continued(
        self,
    ) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF), recording=False)
        try:
            trace_id = TRACEPARENT.split("-")[1]
            spans = tracing.start_consumer_spans(
                ["t"] * 5,
                [
                    None,
                    "00-zz-b7ad6b7169203331-01",
                    "00-" + trace_id + "-" + "0" * 16 + "-01",
                    "01-" + TRACEPARENT[3:],
                    TRACEPARENT.upper(),
                ],
                "g",
            )
            made = [tracing.traceparent_of(span) for span in spans]
            for traceparent in made[:4]:
                assert traceparent is not None
                assert tracing.parse_traceparent(traceparent) is not None
                assert traceparent.split("-")[1] != trace_id
            assert made[4] is not None
            assert made[4].split("-")[1] == trace_id
            context = spans[4].get_span_context()
            assert tracing.format_traceparent(context) == made[4]
        finally:
            tracing.shutdown()

    def test_a_line_logged_while_handling_an_event_has_its_span_ids(self) -> None:
        tracing.install(TracerProvider(sampler=ALWAYS_OFF), recording=False)
        try:
            [span] = tracing.start_consumer_spans(["t"], [TRACEPARENT], "g")
            record = logging.LogRecord("x", logging.INFO, "f", 1, "hello", None, None)
            with tracing.handling({"corr": span}), tracing.handling_event("corr"):
                line = orjson.loads(JsonFormatter().format(record))
                emitted = tracing.traceparent_for("corr")
            assert emitted == tracing.traceparent_of(span)
            assert emitted == f"00-{line['trace_id']}-{line['span_id']}-00"
        finally:
            tracing.shutdown()
