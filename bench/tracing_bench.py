"""What tracing costs each event when nothing is recorded (no OTLP endpoint, the default): the
relay's publish span per outgoing event, and a consumer's process span per polled event with
the traceparent of the event it emits. In-process, no servers; CPU time per event.

Usage: `.venv/bin/python -m bench.tracing_bench [--events 500] [--rounds 200]`.
Writes bench/results/tracing-<ts>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.report import save_report
from shared import tracing
from shared.events.envelope import encode_envelope

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def per_event_us(run: Callable[[], None], events: int, rounds: int) -> float:
    """The best of five measurements of `rounds` runs, in CPU microseconds per event."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(rounds):
            run()
        best = min(best, time.process_time() - started)
    return round(best / rounds / events * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per batch")
    parser.add_argument("--rounds", type=int, default=200, help="batches per measurement")
    args = parser.parse_args()
    tracing.configure("tracing-bench")  # no endpoint: nothing recorded
    payload = encode_envelope(
        "contact.created",
        {"contact_id": "c1"},
        event_id="e1",
        source="/leadwire/bench",
        workspace="w",
        subject="c1",
        correlationid="corr",
        time=datetime.now(UTC),
        traceparent=TRACEPARENT,
    )
    messages = [("leadwire.contacts.v1", "w:c1", payload)] * args.events
    correlations = [f"corr-{i}" for i in range(args.events)]

    def publish() -> None:
        with tracing.publish_spans(messages):
            pass

    def consume_and_emit() -> None:
        spans = tracing.start_consumer_spans(
            ["leadwire.contacts.v1"] * args.events, [TRACEPARENT] * args.events, "bench"
        )
        with tracing.handling(dict(zip(correlations, spans, strict=True))):
            for correlation in correlations:
                tracing.traceparent_for(correlation)

    report = {
        "benchmark": "tracing",
        "at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "events_per_batch": args.events,
        "publish_span_us_per_event": per_event_us(publish, args.events, args.rounds),
        "consumer_span_and_emit_us_per_event": per_event_us(
            consume_and_emit, args.events, args.rounds
        ),
    }
    print(json.dumps(report))
    print(f"saved {save_report('tracing', report)}")


if __name__ == "__main__":
    main()
