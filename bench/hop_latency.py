"""One hop's latency, the unit every step of a lead's path pays: a transaction commits an
outbox row, the relay publishes it to Kafka, a consumer group's handler receives it and commits
its own transaction. Events are sent one at a time, spaced out (the idle case speed-to-lead
cares about), and the time of each stage is reported as percentiles:

- relay: from the outbox commit to the record acknowledged by Kafka (claim, publish, commit);
- delivery: from the acknowledgement to the consumer's handler being called;
- hop: from the outbox commit to the end of the handler's own transaction;
- cpu_ms_per_hop: this process's CPU time (user + system: each database or broker round trip
  costs a system call or two) over the measured events, divided by their number: the
  producing transaction, the relay, both Kafka clients and the consumer's transaction. On a
  loaded machine latency is mostly waiting for a core; this is what one hop costs.

    .venv/bin/python -m bench.hop_latency --events 200 --gap-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, text

from bench.infra import drop_schemas, infrastructure
from bench.report import save_report
from bench.speed_to_lead import summary_ms
from shared import db
from shared.bus.base import Subscription
from shared.bus.kafka import KafkaBus
from shared.events.envelope import Envelope
from shared.events.topics import dlq
from shared.inbox import inbox_table
from shared.outbox import OutboxRelay, outbox_table
from shared.uow import UnitOfWork

TOPIC = "leadwire.hop-latency.v1"


class TimedBus(KafkaBus):
    """Notes when each published batch was acknowledged, by the events' names."""

    acked: dict[str, float]

    async def publish_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        traceparents: Sequence[str | None] | None = None,
    ) -> None:
        await super().publish_batch(messages, traceparents)
        now = time.perf_counter()
        for _, key, _ in messages:
            self.acked[key] = now


async def run(events: int, gap_s: float, kafka: str, postgres: str) -> dict[str, Any]:
    prefix = f"hop{uuid.uuid4().hex[:8]}."
    schema = prefix.rstrip(".")
    bus = TimedBus(kafka, prefix=prefix, topics=[TOPIC, dlq(TOPIC)])
    bus.acked = {}
    engine = db.create_engine(postgres, schema=schema)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    metadata = MetaData()
    outbox, inbox = outbox_table(metadata), inbox_table(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await bus.start()
    relay = OutboxRelay(engine, outbox, bus, "hop")
    relay.start()
    sessions = db.sessionmaker(engine)
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    handled: dict[str, float] = {}
    done = asyncio.Event()

    async def handler(batch: Sequence[Envelope]) -> None:
        now = time.perf_counter()
        async with UnitOfWork(sessions, outbox, inbox) as uow:
            fresh = await uow.first_times("hop", [e.id for e in batch])
        end = time.perf_counter()
        for e in batch:
            if e.id in fresh:
                received[e.data["n"]] = now
                handled[e.data["n"]] = end
        if len(handled) >= events:
            done.set()

    try:
        await bus.subscribe(Subscription(f"{prefix}group", (TOPIC,), handler))
        await warm_up(sessions, outbox, inbox, relay, handled)
        handled.clear()
        received.clear()
        cpu_before = time.process_time()
        for i in range(events):
            name = f"e{i}"
            async with UnitOfWork(sessions, outbox, inbox, relay.notify) as uow:
                uow.emit(TOPIC, name, envelope(name))
            committed[name] = time.perf_counter()
            await asyncio.sleep(gap_s)
        async with asyncio.timeout(60):
            await done.wait()
        await asyncio.sleep(0.2)  # the last offset commit and relay round
        cpu_s = time.process_time() - cpu_before
    finally:
        await relay.stop()
        await bus.stop()
        await drop_schemas(engine, schema)
    names = list(committed)
    return {
        "relay": summary_ms([bus.acked[n] - committed[n] for n in names]),
        "delivery": summary_ms([received[n] - bus.acked[n] for n in names]),
        "handler": summary_ms([handled[n] - received[n] for n in names]),
        "hop": summary_ms([handled[n] - committed[n] for n in names]),
        "cpu_ms_per_hop": round(cpu_s * 1000 / events, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def warm_up(
    sessions: Any, outbox: Any, inbox: Any, relay: OutboxRelay, seen: dict[str, float]
) -> None:
    """Until the consumer has joined and a first event went through (connections, metadata)."""
    async with asyncio.timeout(120):
        while not seen:
            async with UnitOfWork(sessions, outbox, inbox, relay.notify) as uow:
                uow.emit(TOPIC, "warm", envelope("warm"))
            await asyncio.sleep(0.5)
    await asyncio.sleep(1)


def envelope(name: str) -> Envelope:
    return Envelope(
        source="/bench", type="hop.probed", workspace="bench", correlationid=name, data={"n": name}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50)
    args = parser.parse_args()
    with infrastructure() as (kafka, postgres):
        figures = asyncio.run(run(args.events, args.gap_ms / 1000, kafka, postgres))
    at = datetime.now(UTC)
    result = {
        "benchmark": "hop-latency",
        "at": at.isoformat(),
        "command": f"python -m bench.hop_latency --events {args.events} --gap-ms {args.gap_ms:g}",
        **figures,
    }
    print(json.dumps(result, indent=1))
    path = save_report("hop-latency", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
