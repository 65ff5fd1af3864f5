"""One contract, two transports: the in-process bus and Kafka on the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text

from shared import db, metrics
from shared.bus import Bus, Consumer, Subscription
from shared.bus.kafka import KafkaBus
from shared.bus.memory import MemoryBus
from shared.errors import InvalidInput
from shared.events.envelope import Envelope
from shared.events.topics import dlq
from shared.inbox import inbox_table
from shared.outbox import outbox_table
from shared.uow import UnitOfWork
from tests.conftest import unique
from tests.helpers import eventually
from tests.infra import free_port

TOPIC = "leadwire.contract.v1"


@dataclass
class Harness:
    """A bus with its own topic names plus a database for handlers with effects."""

    bus: Bus
    sessions: Callable[[], UnitOfWork]
    effects: Table
    engine: db.AsyncEngine = field(repr=False)

    async def effect_count(self, event_id: str | None = None) -> int:
        query = select(func.count()).select_from(self.effects)
        if event_id is not None:
            query = query.where(self.effects.c.event_id == event_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


def event(key: str, seq: int) -> Envelope:
    return Envelope(
        source="/test",
        type="test.happened",
        workspace="w1",
        correlationid=key,
        subject=key,
        data={"key": key, "seq": seq},
    )


async def publish(bus: Bus, events: Sequence[Envelope]) -> None:
    await bus.publish_batch([(TOPIC, e.subject or "", e.to_bytes()) for e in events])


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    prefix = unique("c") + "."
    bus: Bus
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        url = request.getfixturevalue("postgres_url")
        bus = KafkaBus(
            bootstrap, prefix=prefix, max_retries=3, backoff_s=0.01, topics=[TOPIC, dlq(TOPIC)]
        )
        schema = prefix.rstrip(".")
        engine = db.create_engine(url, schema=schema)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    else:
        bus = MemoryBus(prefix=prefix, max_retries=3, backoff_s=0.01)
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/contract.db")
    metadata = MetaData()
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("event_id", String(64), nullable=False),
    )
    outbox, inbox = outbox_table(metadata), inbox_table(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await bus.start()
    sessions = db.sessionmaker(engine)
    try:
        yield Harness(bus, lambda: UnitOfWork(sessions, outbox, inbox), effects, engine)
    finally:
        await bus.stop()
        await engine.dispose()


async def subscribe(
    h: Harness, group: str, handler: Callable[[Sequence[Envelope]], Awaitable[None]]
) -> Consumer:
    return await h.bus.subscribe(Subscription(group, (TOPIC,), handler))


def effect_handler(
    h: Harness, group: str, seen: list[str]
) -> Callable[[Sequence[Envelope]], Awaitable[None]]:
    """A handler with a database effect guarded by the inbox, in one transaction per batch."""

    async def handle(events: Sequence[Envelope]) -> None:
        async with h.sessions() as uow:
            for e in events:
                seen.append(e.id)
                if await uow.first_time(group, e.id):
                    await uow.session.execute(insert(h.effects).values(event_id=e.id))

    return handle


def committed_then_seen(
    h: Harness, group: str, seen: list[str]
) -> Callable[[Sequence[Envelope]], Awaitable[None]]:
    """As `effect_handler`, noting the events once its transaction has committed: a batch
    noted is one the consumer is done with (a batch cut short by a stop is not)."""
    applied = effect_handler(h, group, [])

    async def handle(events: Sequence[Envelope]) -> None:
        await applied(events)
        seen.extend(e.id for e in events)

    return handle


class TestPerKeyOrder:
    async def test_events_of_one_key_arrive_in_publish_order(self, harness: Harness) -> None:
        received: dict[str, list[int]] = defaultdict(list)

        async def handler(events: Sequence[Envelope]) -> None:
            for e in events:
                received[e.data["key"]].append(e.data["seq"])

        await subscribe(harness, unique("g"), handler)
        keys = [f"contact-{i}" for i in range(12)]
        for seq in range(40):
            await publish(harness.bus, [event(k, seq) for k in keys])

        async def all_in() -> bool:
            return sum(len(v) for v in received.values()) >= 12 * 40

        await eventually(all_in)
        for key in keys:
            assert received[key] == list(range(40)), key

    async def test_each_envelope_arrives_with_its_message_key(self, harness: Harness) -> None:
        keys: dict[str, str | None] = {}

        async def handler(events: Sequence[Envelope]) -> None:
            keys.update((e.data["key"], e.message_key) for e in events)

        await subscribe(harness, unique("g"), handler)
        await publish(harness.bus, [event(f"w1:contact-{i}", 0) for i in range(5)])

        async def all_in() -> bool:
            return len(keys) == 5

        await eventually(all_in)
        assert keys == {f"w1:contact-{i}": f"w1:contact-{i}" for i in range(5)}


class TestTypeFilter:
    async def test_a_subscription_limited_to_some_types_is_handed_only_those(
        self, harness: Harness
    ) -> None:
        batches: list[list[str]] = []

        async def handle(events: Sequence[Envelope]) -> None:
            batches.append([e.type for e in events])

        await harness.bus.subscribe(
            Subscription(unique("g"), (TOPIC,), handle, types=frozenset({"test.wanted"}))
        )
        others = [event(f"k{i}", i) for i in range(5)]  # test.happened
        wanted = event("k-last", 9).model_copy(update={"type": "test.wanted"})
        await publish(harness.bus, others)  # a poll of only other types: handler not called
        await publish(harness.bus, [wanted])

        async def got_wanted() -> bool:
            return any("test.wanted" in b for b in batches)

        await eventually(got_wanted)
        await asyncio.sleep(0.3)
        assert batches == [["test.wanted"]]


class TestGathering:
    async def test_a_patient_subscription_still_gets_a_lone_event(self, harness: Harness) -> None:
        seen: list[str] = []

        async def handle(events: Sequence[Envelope]) -> None:
            seen.extend(e.id for e in events)

        await harness.bus.subscribe(Subscription(unique("g"), (TOPIC,), handle, gather_ms=300))
        lone = event("k", 1)
        await publish(harness.bus, [lone])  # far below what a fetch gathers: held 300 ms

        async def got() -> bool:
            return seen == [lone.id]

        await eventually(got)


@pytest.mark.kafka
async def test_an_idle_kafka_consumer_asks_for_records_only_as_often_as_its_poll_waits(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll returns as soon as records arrive, so a long wait delays no event; an idle
    consumer then polls once per `POLL_WAIT_MS` (every 200 ms before: a wake-up of its loop for
    nothing, some 110 a second across an idle stack)."""
    polls = 0
    getmany = AIOKafkaConsumer.getmany

    async def counted(self: AIOKafkaConsumer, *tps: Any, **options: Any) -> Any:
        nonlocal polls
        polls += 1
        return await getmany(self, *tps, **options)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", counted)
    bus = KafkaBus(kafka_bootstrap, prefix=unique("p") + ".", topics=[TOPIC, dlq(TOPIC)])
    await bus.start()
    seen: list[str] = []

    async def handle(events: Sequence[Envelope]) -> None:
        seen.extend(e.id for e in events)

    def saw(*events: Envelope) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return seen == [e.id for e in events]

        return check

    try:
        await bus.subscribe(Subscription(unique("g"), (TOPIC,), handle))
        first, second = event("k", 1), event("k", 2)
        await publish(bus, [first])
        await eventually(saw(first))  # the consumer has joined and polls
        before = polls
        await asyncio.sleep(2)
        assert polls - before <= 1
        await publish(bus, [second])  # and a waiting poll hands it over
        await eventually(saw(first, second))
    finally:
        await bus.stop()


class TestFailures:
    async def test_a_failing_event_is_redelivered_until_it_succeeds(self, harness: Harness) -> None:
        attempts: dict[int, int] = defaultdict(int)

        async def flaky(events: Sequence[Envelope]) -> None:
            for e in events:
                attempts[e.data["seq"]] += 1
                if e.data["seq"] == 3 and attempts[3] < 3:
                    raise RuntimeError("temporary outage")

        await subscribe(harness, unique("g"), flaky)
        await publish(harness.bus, [event("k", i) for i in range(6)])

        async def done() -> bool:
            return attempts[5] >= 1 and attempts[3] >= 3

        await eventually(done)
        assert await harness.bus.dead_letters(TOPIC) == []

    async def test_an_event_that_keeps_failing_lands_on_the_dlq_with_its_error(
        self, harness: Harness
    ) -> None:
        handled: list[int] = []
        poison_attempts = 0

        async def handler(events: Sequence[Envelope]) -> None:
            nonlocal poison_attempts
            for e in events:
                if e.data["seq"] == 2:
                    poison_attempts += 1
                    raise ValueError("cannot handle seq 2")
            handled.extend(e.data["seq"] for e in events)

        group = unique("g")
        await subscribe(harness, group, handler)
        await publish(harness.bus, [event("k", i) for i in range(5)])

        async def parked() -> bool:
            return len(await harness.bus.dead_letters(TOPIC)) == 1 and 4 in handled

        await eventually(parked)
        [record] = await harness.bus.dead_letters(TOPIC)
        assert Envelope.from_bytes(record.value).data["seq"] == 2
        assert "cannot handle seq 2" in record.headers["leadwire-error"]
        assert record.headers["leadwire-attempts"] == "3"
        assert record.headers["leadwire-group"] == group
        assert sorted(set(handled)) == [0, 1, 3, 4]
        assert poison_attempts >= 3  # the whole batch once, then the event alone, 3 tries

    async def test_a_domain_error_goes_to_the_dlq_at_once_with_its_code_and_field_errors(
        self, harness: Harness
    ) -> None:
        attempts = 0

        async def handler(events: Sequence[Envelope]) -> None:
            nonlocal attempts
            attempts += 1
            raise InvalidInput(
                "the command is invalid",
                errors=[{"field": "lifecycle", "code": "not_an_option", "message": "unknown"}],
            )

        await subscribe(harness, unique("g"), handler)
        await publish(harness.bus, [event("k", 1)])

        async def parked() -> bool:
            return len(await harness.bus.dead_letters(TOPIC)) == 1

        await eventually(parked)
        [record] = await harness.bus.dead_letters(TOPIC)
        assert record.headers["leadwire-attempts"] == "1"
        assert record.headers["leadwire-error"].startswith(
            "validation_failed: the command is invalid"
        )
        assert '"code":"not_an_option"' in record.headers["leadwire-error"]
        assert attempts == 2  # the batch once, then the event alone once

    async def test_a_message_that_is_not_an_envelope_goes_to_the_dlq(
        self, harness: Harness
    ) -> None:
        handled: list[int] = []

        async def handler(events: Sequence[Envelope]) -> None:
            handled.extend(e.data["seq"] for e in events)

        await subscribe(harness, unique("g"), handler)
        await harness.bus.publish_batch([(TOPIC, "k", b"{not json")])
        await publish(harness.bus, [event("k", 1)])

        async def done() -> bool:
            return handled == [1] and len(await harness.bus.dead_letters(TOPIC)) == 1

        await eventually(done)
        [record] = await harness.bus.dead_letters(TOPIC)
        assert record.headers["leadwire-error"].startswith("invalid_envelope")


class TestDependencyOutages:
    """A database that is down is waited out, however long: never a dead letter."""

    async def test_an_outage_longer_than_the_retry_limit_holds_the_events_until_it_ends(
        self, harness: Harness
    ) -> None:
        # A real driver failing for real: PostgreSQL on a port where nothing listens.
        dead = db.create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/leadwire")
        down = True
        tries = 0
        handled: list[int] = []

        async def handler(events: Sequence[Envelope]) -> None:
            nonlocal tries
            tries += 1
            if down:
                async with dead.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            handled.extend(e.data["seq"] for e in events)

        group = unique("g")
        consumer = await subscribe(harness, group, handler)

        async def ready() -> bool:
            return consumer.ready

        await eventually(ready)
        await publish(harness.bus, [event("k", i) for i in range(3)])

        async def many_tries() -> bool:
            return tries >= 3 * 3  # three times the poison limit

        await eventually(many_tries)
        assert not consumer.ready
        assert metrics.CONSUMER_WAITING.labels(group)._value.get() == 1
        assert handled == []
        down = False

        async def resumed() -> bool:
            return handled == [0, 1, 2] and consumer.ready

        await eventually(resumed)
        assert await harness.bus.dead_letters(TOPIC) == []
        assert metrics.CONSUMER_WAITING.labels(group)._value.get() == 0
        assert metrics.CONSUMER_TRANSIENT_FAILURES.labels(group)._value.get() >= 9
        await dead.dispose()

    async def test_a_poison_event_after_an_outage_still_reaches_the_dlq(
        self, harness: Harness
    ) -> None:
        outage_left = 4
        handled: list[int] = []

        async def handler(events: Sequence[Envelope]) -> None:
            nonlocal outage_left
            if outage_left:
                outage_left -= 1
                raise ConnectionResetError("connection reset by peer")
            if any(e.data["seq"] == 1 for e in events):
                raise KeyError("seq 1 is a bug")
            handled.extend(e.data["seq"] for e in events)

        await subscribe(harness, unique("g"), handler)
        await publish(harness.bus, [event("k", i) for i in range(3)])

        async def done() -> bool:
            return len(await harness.bus.dead_letters(TOPIC)) == 1 and 2 in handled

        await eventually(done)
        [record] = await harness.bus.dead_letters(TOPIC)
        assert Envelope.from_bytes(record.value).data["seq"] == 1
        assert record.headers["leadwire-attempts"] == "3"  # the outage counted for nothing
        assert "KeyError" in record.headers["leadwire-error"]
        assert handled == [0, 2]


class TestAtLeastOnceWithInbox:
    async def test_a_consumer_stopped_before_its_commit_gets_the_event_again_without_a_second_effect(
        self, harness: Harness
    ) -> None:
        group = unique("g")
        effect_done = asyncio.Event()

        async def crashes_after_effect(events: Sequence[Envelope]) -> None:
            await effect_handler(harness, group, [])(events)
            effect_done.set()
            await asyncio.Event().wait()  # "killed" here: effect committed, offset not

        first = await subscribe(harness, group, crashes_after_effect)
        e = event("k", 1)
        await publish(harness.bus, [e])
        await asyncio.wait_for(effect_done.wait(), 60)
        await first.stop()
        assert await harness.effect_count(e.id) == 1

        seen: list[str] = []
        await subscribe(harness, group, effect_handler(harness, group, seen))

        async def redelivered() -> bool:
            return e.id in seen

        await eventually(redelivered)
        assert await harness.effect_count(e.id) == 1

    async def test_two_consumers_in_one_group_share_partitions_and_apply_each_event_once(
        self, harness: Harness
    ) -> None:
        group = unique("g")
        seen_a: list[str] = []
        seen_b: list[str] = []
        a = await subscribe(harness, group, effect_handler(harness, group, seen_a))
        b = await subscribe(harness, group, effect_handler(harness, group, seen_b))

        async def balanced() -> bool:
            mine, theirs = a.assignment(), b.assignment()
            return bool(mine) and bool(theirs) and not mine & theirs and len(mine | theirs) == 4

        await eventually(balanced)
        events = [event(f"contact-{i}", i) for i in range(200)]
        await publish(harness.bus, events)

        async def all_applied() -> bool:
            return await harness.effect_count() == 200

        await eventually(all_applied)
        await asyncio.sleep(0.5)  # give any duplicate delivery the chance to show up
        assert await harness.effect_count() == 200
        assert set(seen_a) | set(seen_b) == {e.id for e in events}
        assert seen_a, "both members should have handled part of the stream"
        assert seen_b, "both members should have handled part of the stream"

    async def test_a_member_that_leaves_has_committed_what_it_handled(
        self, harness: Harness
    ) -> None:
        group = unique("g")
        seen: list[str] = []
        first = await subscribe(harness, group, committed_then_seen(harness, group, seen))
        handled = [event(f"k{i}", i) for i in range(20)]
        for e in handled:  # one at a time: many small batches, commits coalesced
            await publish(harness.bus, [e])

        async def all_seen() -> bool:
            return len(seen) == len(handled)

        await eventually(all_seen)
        await first.stop()
        later: list[str] = []
        await subscribe(harness, group, effect_handler(harness, group, later))
        after = event("k-after", 99)
        await publish(harness.bus, [after])

        async def got_after() -> bool:
            return after.id in later

        await eventually(got_after)
        assert later == [after.id]  # nothing handled before the stop came again

    async def test_partitions_moving_to_a_new_member_bring_no_handled_event_again(
        self, harness: Harness
    ) -> None:
        group = unique("g")
        seen_a: list[str] = []
        seen_b: list[str] = []
        a = await subscribe(harness, group, committed_then_seen(harness, group, seen_a))
        before = [event(f"contact-{i}", i) for i in range(40)]
        for e in before:
            await publish(harness.bus, [e])

        async def a_has_all() -> bool:
            return len(seen_a) == len(before)

        await eventually(a_has_all)
        b = await subscribe(harness, group, committed_then_seen(harness, group, seen_b))

        async def balanced() -> bool:
            mine, theirs = a.assignment(), b.assignment()
            return bool(mine) and bool(theirs) and len(mine | theirs) == 4

        await eventually(balanced)
        after = [event(f"contact-{i}", i) for i in range(40, 80)]
        await publish(harness.bus, after)

        async def all_seen() -> bool:
            return len(set(seen_a) | set(seen_b)) == len(before) + len(after)

        await eventually(all_seen)
        await asyncio.sleep(0.5)
        # Each event delivered once: the revoked partitions' offsets were committed first.
        assert sorted(seen_a + seen_b) == sorted(e.id for e in before + after)


class TestMemoryRetention:
    """The in-process bus keeps each partition's newest records only, as a Kafka topic does."""

    async def test_old_records_are_dropped_and_offsets_keep_counting(self) -> None:
        bus = MemoryBus(partitions=1, retention=100)
        await bus.start()
        await publish(bus, [event("k", seq) for seq in range(250)])
        kept = bus.records(TOPIC)
        assert 100 <= len(kept) <= 110
        assert [r.offset for r in kept] == list(range(250 - len(kept), 250))
        assert [Envelope.from_bytes(r.value).data["seq"] for r in kept][-1] == 249
        await bus.stop()

    async def test_a_group_behind_retention_resumes_at_the_oldest_record_kept(self) -> None:
        bus = MemoryBus(partitions=1, retention=100)
        await bus.start()
        await publish(bus, [event("k", seq) for seq in range(250)])
        received: list[int] = []

        async def handler(events: Sequence[Envelope]) -> None:
            received.extend(e.data["seq"] for e in events)

        await bus.subscribe(Subscription("late", (TOPIC,), handler))

        async def caught_up() -> bool:
            return bool(received) and received[-1] == 249

        await eventually(caught_up)
        oldest = bus.records(TOPIC)[0].offset
        assert received == list(range(oldest, 250))
        assert len(bus.consumed("late")) == 250 - oldest
        await bus.stop()
