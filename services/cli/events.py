"""`leadwire dlq list|show|replay` and `leadwire tail`: what is on the topics, for people."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

from shared.bus import make_bus
from shared.bus.base import Record
from shared.bus.kafka import KafkaBus
from shared.events.topics import ALL_TOPICS
from shared.settings import Settings


class NotOnKafka(Exception):
    """The embedded mode's bus lives inside the running process; there is nothing to read."""


@asynccontextmanager
async def kafka(settings: Settings) -> AsyncIterator[KafkaBus]:
    """The cluster the settings name (TLS and SASL included), connected."""
    if settings.bus != "kafka":
        raise NotOnKafka("set LEADWIRE_BUS=kafka and LEADWIRE_KAFKA_BOOTSTRAP (and credentials)")
    bus = make_bus(settings, client_id="leadwire-cli")
    assert isinstance(bus, KafkaBus)
    await bus.start()
    try:
        await bus.wait_connected(30)
        yield bus
    finally:
        await bus.stop()


def shown(value: bytes) -> dict[str, object]:
    """A dead letter's value for printing: the event as JSON, or, for what is not even JSON (a
    foreign producer's bytes, the usual reason it is there), the raw text."""
    try:
        return {"event": json.loads(value or b"null")}
    except ValueError:
        return {"raw": value.decode(errors="replace")}


def _event(record: Record) -> dict[str, object]:
    value = shown(record.value)
    event = value.get("event", value)
    return event if isinstance(event, dict) else {"value": event}


def readable(record: Record, topic_prefix: str = "") -> str:
    """One line a person can scan: when, what, for whom, about what, and the data."""
    event = _event(record)
    data = json.dumps(event.get("data", {}), separators=(",", ":"), ensure_ascii=False)
    if len(data) > 160:
        data = data[:157] + "..."
    fields = [
        str(event.get("time", "-"))[:23],
        f"{record.topic.removeprefix(topic_prefix)}[{record.partition}]@{record.offset}",
        str(event.get("type", "?")),
        f"ws={event.get('workspace', '-')}",
        f"subject={event.get('subject') or '-'}",
        data,
    ]
    return "  ".join(fields)


async def list_dead_letters(settings: Settings, out: TextIO = sys.stdout) -> None:
    async with kafka(settings) as bus:
        print(f"{'TOPIC':<40} {'DEAD LETTERS':>12}  LATEST ERROR", file=out)
        for topic in ALL_TOPICS:
            records = await bus.dead_letters(topic)
            latest = records[-1].headers.get("leadwire-error", "").splitlines() if records else []
            print(f"{topic:<40} {len(records):>12}  {(latest or [''])[0][:80]}", file=out)


async def show_dead_letters(
    settings: Settings, topic: str, as_json: bool, out: TextIO = sys.stdout
) -> None:
    async with kafka(settings) as bus:
        for record in await bus.dead_letters(topic):
            if as_json:
                line = {"key": record.key, "headers": record.headers, **shown(record.value)}
                print(json.dumps(line), file=out)
                continue
            event = _event(record)
            error = record.headers.get("leadwire-error", "").splitlines()
            print(
                f"{event.get('id', '?')}  {event.get('type', '?')}  ws={event.get('workspace')}"
                f"  group={record.headers.get('leadwire-group')}"
                f"  attempts={record.headers.get('leadwire-attempts')}"
                f"  error={(error or [''])[-1][:120]}",
                file=out,
            )


async def replay_dead_letters(
    settings: Settings, topic: str, event_ids: list[str], out: TextIO = sys.stdout
) -> None:
    """Re-publish dead letters (all, or those with the given event ids) to their topic.

    Safe: a consumer that already applied an event skips it through its inbox."""
    async with kafka(settings) as bus:
        replayed = 0
        for record in await bus.dead_letters(topic):
            if event_ids and _event(record).get("id") not in event_ids:
                continue
            original = record.headers.get("leadwire-original-topic", settings.topic(topic))
            # Back with the headers it was published with (content type, trace context).
            kept = {k: v for k, v in record.headers.items() if not k.startswith("leadwire-")}
            await bus.send_raw(original, record.key, record.value, kept)
            replayed += 1
        print(f"replayed {replayed} event(s) to {settings.topic(topic)}", file=out)


async def tail(
    settings: Settings,
    topic: str,
    from_start: bool,
    limit: int | None,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> None:
    """Print a topic's events as they arrive (or from its start), until `limit` or Ctrl-C."""
    done = asyncio.Event()
    seen = 0

    async def show(record: Record) -> None:
        nonlocal seen
        if done.is_set():
            return
        line = json.dumps(_event(record)) if as_json else readable(record, settings.topic_prefix)
        print(line, file=out, flush=True)
        seen += 1
        if limit is not None and seen >= limit:
            done.set()

    async with kafka(settings) as bus:
        follower = await bus.follow(topic, show, from_start=from_start)
        try:
            await done.wait()
        finally:
            await follower.stop()
