"""The transactional outbox on both stacks: SQLite with the in-process bus, PostgreSQL with Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, select, text

from shared import db
from shared import outbox as outbox_module
from shared.bus import Bus, Subscription
from shared.bus.kafka import KafkaBus
from shared.bus.memory import MemoryBus
from shared.events.envelope import Envelope
from shared.events.topics import dlq
from shared.inbox import AlreadyHandled, inbox_table
from shared.outbox import OutboxRelay, outbox_table
from shared.uow import UnitOfWork, outbox_row
from tests.conftest import unique

TOPIC = "leadwire.outbox-test.v1"


@dataclass
class Stack:
    bus: Bus
    engine: db.AsyncEngine
    outbox: Table
    inbox: Table
    schema: str | None

    def uow(self, relay: OutboxRelay | None = None) -> UnitOfWork:
        notify = relay.notify if relay else lambda: None
        return UnitOfWork(db.sessionmaker(self.engine), self.outbox, self.inbox, notify)

    def relay(self) -> OutboxRelay:
        return OutboxRelay(self.engine, self.outbox, self.bus, "test", poll_interval_s=0.05)


@pytest.fixture(
    params=[
        "sqlite+memory",
        pytest.param("postgres+kafka", marks=[pytest.mark.kafka, pytest.mark.postgres]),
    ]
)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    prefix = unique("o") + "."
    bus: Bus
    if request.param == "postgres+kafka":
        bus = KafkaBus(
            request.getfixturevalue("kafka_bootstrap"), prefix=prefix, topics=[TOPIC, dlq(TOPIC)]
        )
        schema = prefix.rstrip(".")
        engine = db.create_engine(request.getfixturevalue("postgres_url"), schema=schema)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    else:
        bus = MemoryBus(prefix=prefix)
        schema = None
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    metadata = MetaData()
    outbox, inbox = outbox_table(metadata), inbox_table(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await bus.start()
    try:
        yield Stack(bus, engine, outbox, inbox, schema)
    finally:
        await bus.stop()
        await engine.dispose()


def envelope(name: str) -> Envelope:
    return Envelope(
        source="/test",
        type="test.happened",
        workspace="w1",
        correlationid=name,
        data={"name": name},
    )


async def collect(bus: Bus) -> list[str]:
    received: list[str] = []

    async def handler(events: Sequence[Envelope]) -> None:
        received.extend(e.data["name"] for e in events)

    await bus.subscribe(Subscription(unique("g"), (TOPIC,), handler))
    return received


async def until(received: list[str], name: str) -> None:
    async with asyncio.timeout(60):
        while name not in received:
            await asyncio.sleep(0.05)


class TestOutbox:
    async def test_events_of_a_rolled_back_transaction_are_never_published(
        self, stack: Stack
    ) -> None:
        relay = stack.relay()
        relay.start()
        received = await collect(stack.bus)
        with pytest.raises(RuntimeError):
            async with stack.uow(relay) as uow:
                uow.emit(TOPIC, "k", envelope("rolled-back"))
                raise RuntimeError("the state change failed")
        async with stack.uow(relay) as uow:
            uow.emit(TOPIC, "k", envelope("committed"))
        await until(received, "committed")
        await relay.stop()
        assert received == ["committed"]

    async def test_events_committed_while_the_relay_was_down_are_published_when_it_starts(
        self, stack: Stack
    ) -> None:
        received = await collect(stack.bus)
        async with stack.uow() as uow:
            for i in range(3):
                uow.emit(TOPIC, "k", envelope(f"while-down-{i}"))
        await asyncio.sleep(0.3)
        assert received == []
        relay = stack.relay()
        relay.start()
        await until(received, "while-down-2")
        await relay.stop()
        assert received == ["while-down-0", "while-down-1", "while-down-2"]

    async def test_published_rows_are_not_published_again(self, stack: Stack) -> None:
        received = await collect(stack.bus)
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("once"))
        relay = stack.relay()
        assert await relay.publish_pending() == 1
        assert await relay.publish_pending() == 0
        await until(received, "once")
        await asyncio.sleep(0.3)
        assert received == ["once"]

    async def test_rows_a_caller_took_to_write_itself_go_once_and_the_commit_wakes_the_relay(
        self, stack: Stack
    ) -> None:
        received = await collect(stack.bus)
        woken: list[bool] = []
        sessions = db.sessionmaker(stack.engine)
        async with UnitOfWork(
            sessions, stack.outbox, stack.inbox, lambda: woken.append(True)
        ) as uow:
            uow.emit(TOPIC, "k", envelope("taken"))
            taken = uow.take_pending()
            assert uow.take_pending() == []
            await db.insert_rows(uow.session, stack.outbox, taken)
        assert woken == [True]  # nothing was left for the unit of work to write, yet it wakes
        assert await stack.relay().publish_pending() == 1
        await until(received, "taken")
        await asyncio.sleep(0.3)
        assert received == ["taken"]

    async def test_a_claim_at_commit_keeps_the_events_and_the_inbox_rows_together(
        self, stack: Stack
    ) -> None:
        received = await collect(stack.bus)
        async with stack.uow() as uow:
            uow.claim_at_commit("c1", ["e1", "e2", "e1"])
            uow.emit(TOPIC, "k", envelope("claimed"))
        async with stack.uow() as uow:
            assert await uow.first_times("c1", ["e1", "e2", "e3"]) == {"e3"}
        assert await stack.relay().publish_pending() == 1
        await until(received, "claimed")

    async def test_a_claim_at_commit_of_an_event_seen_before_keeps_nothing(
        self, stack: Stack
    ) -> None:
        async with stack.uow() as uow:
            assert await uow.first_times("c1", ["e1"]) == {"e1"}
        with pytest.raises(AlreadyHandled):
            async with stack.uow() as uow:
                uow.claim_at_commit("c1", ["e2", "e1"])
                uow.emit(TOPIC, "k", envelope("replayed"))
        async with stack.uow() as uow:
            assert await uow.first_times("c1", ["e2"]) == {"e2"}  # rolled back with the rest
        assert await stack.relay().publish_pending() == 0

    async def test_a_claim_a_caller_took_is_not_claimed_again_by_the_commit(
        self, stack: Stack
    ) -> None:
        async with stack.uow() as uow:
            uow.claim_at_commit("c1", ["e1", "e2"])
            taken = uow.take_claim()
            assert uow.take_claim() is None
            assert taken is not None
            assert await uow.first_times(*taken) == {"e1", "e2"}  # the caller's own claim
            uow.emit(TOPIC, "k", envelope("claimed by the caller"))
        async with stack.uow() as uow:
            assert await uow.first_times("c1", ["e1", "e2", "e3"]) == {"e3"}
        assert await stack.relay().publish_pending() == 1

    async def test_rows_deferred_to_the_commit_are_written_with_it_or_not_at_all(
        self, stack: Stack
    ) -> None:
        notes = Table("notes", MetaData(), Column("id", String(20), primary_key=True))
        async with stack.engine.begin() as conn:
            await conn.run_sync(notes.metadata.create_all)
        async with stack.uow() as uow:
            uow.claim_at_commit("c1", ["e1"])
            await db.defer_json_rows(uow.session, notes, [{"id": "n1"}, {"id": "n2"}])
            uow.emit(TOPIC, "k", envelope("noted"))
        with pytest.raises(AlreadyHandled):
            async with stack.uow() as uow:
                uow.claim_at_commit("c1", ["e1"])
                await db.defer_json_rows(uow.session, notes, [{"id": "n3"}])
        async with stack.uow() as uow:  # no claim: the rows and the outbox's, one statement
            await db.defer_json_rows(uow.session, notes, [{"id": "n4"}])
            uow.emit(TOPIC, "k", envelope("noted again"))
        async with stack.engine.connect() as conn:
            kept = set((await conn.execute(select(notes.c.id))).scalars())
        assert kept == {"n1", "n2", "n4"}
        assert await stack.relay().publish_pending() == 2

    async def test_updates_deferred_to_the_commit_are_written_with_it_or_not_at_all(
        self, stack: Stack
    ) -> None:
        tallies = Table(
            "tallies",
            MetaData(),
            Column("id", String(20), primary_key=True),
            Column("owner", String(20)),
            Column("note", String(20)),
        )
        async with stack.engine.begin() as conn:
            await conn.run_sync(tallies.metadata.create_all)
            await conn.execute(
                tallies.insert(),
                [
                    {"id": "a", "owner": "x", "note": "kept"},
                    {"id": "b", "owner": "x", "note": None},
                ],
            )
        async with stack.uow() as uow:
            uow.claim_at_commit("c1", ["e1"])
            await db.defer_json_update(uow.session, tallies, [{"id": "a", "owner": "y"}])
            await db.defer_json_rows(
                uow.session, tallies, [{"id": "c", "owner": "z", "note": None}]
            )
        with pytest.raises(AlreadyHandled):
            async with stack.uow() as uow:
                uow.claim_at_commit("c1", ["e1"])
                await db.defer_json_update(uow.session, tallies, [{"id": "b", "owner": "w"}])
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(select(tallies).order_by(tallies.c.id))).all()
        # Only the named column is set; the row left out and the rolled back update untouched.
        assert [tuple(r) for r in rows] == [("a", "y", "kept"), ("b", "x", None), ("c", "z", None)]

    async def test_updates_deferred_to_the_commit_find_rows_by_a_key_of_several_columns(
        self, stack: Stack
    ) -> None:
        tries = Table(
            "tries",
            MetaData(),
            Column("run", String(20), primary_key=True),
            Column("number", String(5), primary_key=True),
            Column("outcome", String(20)),
        )
        async with stack.engine.begin() as conn:
            await conn.run_sync(tries.metadata.create_all)
            await conn.execute(
                tries.insert(), [{"run": "r", "number": n, "outcome": None} for n in "12"]
            )
        async with stack.uow() as uow:
            done = [{"run": "r", "number": "2", "outcome": "sent"}]
            await db.defer_json_update(uow.session, tries, done, ("run", "number"))
            uow.emit(TOPIC, "k", envelope("tried"))
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(select(tries).order_by(tries.c.number))).all()
        assert [tuple(r) for r in rows] == [("r", "1", None), ("r", "2", "sent")]

    async def test_kafka_rows_go_once_published_memory_bus_rows_are_kept_a_day(
        self, stack: Stack
    ) -> None:
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("kept-or-not"))
        await stack.relay().publish_pending()
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(select(stack.outbox.c.sent_at))).scalars().all()
        if isinstance(stack.bus, KafkaBus):
            assert rows == []  # Kafka is the durable log
        else:
            assert len(rows) == 1  # kept, to be re-published after a restart
            assert rows[0] is not None


class TestPromptness:
    """A relay never waits out its poll interval (here a minute) while rows wait to go."""

    async def test_a_commit_landing_while_a_round_publishes_goes_in_the_next_round(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("a relay round holds SQLite's one write lock: no commit lands during it")
        received = await collect(stack.bus)
        relay = OutboxRelay(stack.engine, stack.outbox, stack.bus, "test", poll_interval_s=60)
        publish = stack.bus.publish_batch
        committed_meanwhile = False

        async def publish_then_commit_another(*args: Any, **kwargs: Any) -> None:
            nonlocal committed_meanwhile
            await publish(*args, **kwargs)
            if not committed_meanwhile:  # the round is still open: this commit missed it
                committed_meanwhile = True
                async with stack.uow(relay) as uow:
                    uow.emit(TOPIC, "k", envelope("during"))

        stack.bus.publish_batch = publish_then_commit_another  # type: ignore[method-assign]
        relay.start()
        try:
            async with stack.uow(relay) as uow:
                uow.emit(TOPIC, "k", envelope("before"))
            async with asyncio.timeout(10):
                while "during" not in received:
                    await asyncio.sleep(0.02)
        finally:
            await relay.stop()
        assert received == ["before", "during"]

    async def test_a_commit_landing_in_a_round_that_found_nothing_goes_without_a_linger(
        self, stack: Stack
    ) -> None:
        # A timed poll that a lone commit happened to land in is not a stream: the linger
        # (here a minute) that lets a stream's commits gather is not for it.
        received = await collect(stack.bus)
        relay = OutboxRelay(
            stack.engine, stack.outbox, stack.bus, "test", poll_interval_s=60, linger_s=60
        )
        rounds = relay.publish_pending
        committed = False

        async def round_then_commit() -> int:
            nonlocal committed
            sent = await rounds()
            if not committed:  # the relay's first round, empty: this commit missed it
                committed = True
                assert sent == 0
                async with stack.uow(relay) as uow:
                    uow.emit(TOPIC, "k", envelope("lone"))
            return sent

        relay.publish_pending = round_then_commit  # type: ignore[method-assign]
        relay.start()
        try:
            async with asyncio.timeout(10):  # well before the linger or the poll interval
                while "lone" not in received:
                    await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    async def test_a_commit_lets_the_waiting_relay_start_its_round_before_it_returns(
        self, stack: Stack
    ) -> None:
        # The round (its read sent) comes before the committing task's own work after the
        # commit, which would otherwise hold a lead's hop back.
        relay = stack.relay()
        rounds = relay.publish_pending
        started = 0

        async def counted() -> int:
            nonlocal started
            started += 1
            return await rounds()

        relay.publish_pending = counted  # type: ignore[method-assign]
        relay.start()
        try:
            async with asyncio.timeout(10):  # the first round done, the relay waits for a wake
                while not (started and relay.resting):
                    await asyncio.sleep(0.01)
            before = started
            async with stack.uow(relay) as uow:
                uow.emit(TOPIC, "k", envelope("at-once"))
            assert started == before + 1
        finally:
            await relay.stop()

    async def test_rows_wait_only_briefly_while_another_replica_holds_the_relay_lock(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("SQLite serialises writers itself; the relay lock is PostgreSQL's")
        received = await collect(stack.bus)
        relay = OutboxRelay(stack.engine, stack.outbox, stack.bus, "test", poll_interval_s=60)
        relay.start()
        try:
            async with db.sessionmaker(stack.engine)() as other, other.begin():
                assert await db.try_xact_lock(other, "leadwire-outbox-test")
                async with stack.uow(relay) as uow:
                    uow.emit(TOPIC, "k", envelope("while-locked"))
                await asyncio.sleep(0.5)
                assert received == []  # the other replica holds the lock
            async with asyncio.timeout(10):  # released: well before the poll interval
                while "while-locked" not in received:
                    await asyncio.sleep(0.02)
        finally:
            await relay.stop()


class TestRelayLock:
    """Between rounds, and after a failed one, the relay holds no lock another could want."""

    async def lock_is_free(self, stack: Stack) -> bool:
        async with db.sessionmaker(stack.engine)() as other, other.begin():
            return await db.try_xact_lock(other, "leadwire-outbox-test")

    async def test_the_lock_is_released_after_a_round_with_or_without_rows(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("SQLite serialises writers itself; the relay lock is PostgreSQL's")
        relay = stack.relay()
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("one"))
        assert await relay.publish_pending() == 1
        assert await self.lock_is_free(stack)
        assert await relay.publish_pending() == 0
        assert await self.lock_is_free(stack)

    async def test_the_delete_keeps_the_lock_until_it_commits(self, stack: Stack) -> None:
        """The round's delete releases the session lock in its own statement, so another
        replica must not get the lock before that delete has committed: it would read the
        rows being deleted and publish them again."""
        if stack.schema is None:
            pytest.skip("SQLite serialises writers itself; the relay lock is PostgreSQL's")
        relay = stack.relay()
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("one"))
        async with stack.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            ids = [row["id"] for row in await driver.fetch("SELECT id FROM outbox")]
            assert await driver.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", relay._lock)
            # The delete in a transaction left open, where the relay's commits at once.
            async with driver.transaction():
                await driver.execute(relay._delete_sql, ids, relay._lock)
                assert not await self.lock_is_free(stack)
            assert await self.lock_is_free(stack)
            assert await driver.fetchval("SELECT count(*) FROM outbox") == 0
            # The session lock itself was released (not held twice).
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            assert await driver.fetchval(held, driver.get_server_pid()) == 0

    async def test_a_failed_publish_keeps_the_rows_and_releases_the_lock(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("SQLite serialises writers itself; the relay lock is PostgreSQL's")
        received = await collect(stack.bus)
        relay = stack.relay()
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("kept"))
        publish = stack.bus.publish_batch

        async def broker_gone(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("broker gone")

        stack.bus.publish_batch = broker_gone  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await relay.publish_pending()
        assert await self.lock_is_free(stack)
        stack.bus.publish_batch = publish  # type: ignore[method-assign]
        assert await relay.publish_pending() == 1
        await until(received, "kept")


class TestRelayConnection:
    """On PostgreSQL the relay's own loop keeps one connection from round to round (a pool
    checkout cost as much as the round's read) and gives it back when it stops; a round asked
    for directly gives it back at once."""

    async def test_the_loop_keeps_one_connection_and_gives_it_back_when_it_stops(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("the kept connection is the PostgreSQL relay's")
        received = await collect(stack.bus)
        relay = stack.relay()
        relay.start()
        try:
            for name in ("first", "second"):
                async with stack.uow(relay) as uow:
                    uow.emit(TOPIC, "k", envelope(name))
                await until(received, name)
                assert stack.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        finally:
            await relay.stop()
        assert stack.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert received == ["first", "second"]

    async def test_a_round_asked_for_directly_gives_its_connection_back(self, stack: Stack) -> None:
        async with stack.uow() as uow:
            uow.emit(TOPIC, "k", envelope("direct"))
        assert await stack.relay().publish_pending() == 1
        assert stack.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


class TestSeveralRelays:
    async def test_two_relay_replicas_publish_each_event_once_and_in_order(
        self, stack: Stack
    ) -> None:
        received = await collect(stack.bus)
        for batch in range(10):
            async with stack.uow() as uow:
                for i in range(30):
                    uow.emit(TOPIC, f"k{i % 3}", envelope(f"{i % 3}:{batch * 30 + i:04d}"))
        replica_engine = db.create_engine(
            str(stack.engine.url.render_as_string(False)), schema=stack.schema
        )
        replicas = [
            stack.relay(),
            OutboxRelay(replica_engine, stack.outbox, stack.bus, "test", poll_interval_s=0.05),
        ]
        for relay in replicas:
            relay.start()
        try:
            async with asyncio.timeout(60):
                while len(received) < 300:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            for relay in replicas:
                await relay.stop()
            await replica_engine.dispose()
        assert len(received) == 300
        assert len(set(received)) == 300
        for key in "012":
            of_key = [name for name in received if name.startswith(f"{key}:")]
            assert of_key == sorted(of_key)


class TestStreamingPastDeadRows:
    """On PostgreSQL the relay reads past the rows it published (dead in the index until
    vacuum) without losing a straggler or reordering a key. Sweeps are off here (an hour
    apart): what these tests see, the relay's streaming read found by itself."""

    def relay(self, stack: Stack, engine: db.AsyncEngine | None = None) -> OutboxRelay:
        return OutboxRelay(
            engine or stack.engine, stack.outbox, stack.bus, "test", sweep_every_s=3600
        )

    async def test_a_straggler_committed_after_a_later_row_was_published_goes_before_its_key_next(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("SQLite has one writer at a time: its rows commit in id order")
        received = await collect(stack.bus)
        relay = self.relay(stack)
        async with stack.uow() as uow:
            uow.emit(TOPIC, "a", envelope("a:first"))
        assert await relay.publish_pending() == 1
        async with db.sessionmaker(stack.engine)() as slow, slow.begin():
            # Draws its id now, commits after the relay has published a later one.
            straggler = outbox_row(TOPIC, "b", envelope("b:straggler"))
            await db.insert_rows(slow, stack.outbox, [straggler])
            async with stack.uow() as uow:
                uow.emit(TOPIC, "a", envelope("a:passed"))
            assert await relay.publish_pending() == 1
        async with stack.uow() as uow:  # the straggler's key, after it committed
            uow.emit(TOPIC, "b", envelope("b:after"))
        assert await relay.publish_pending() == 2  # both, in one read
        await until(received, "b:after")
        await until(received, "a:passed")
        assert [n for n in received if n.startswith("b:")] == ["b:straggler", "b:after"]
        assert [n for n in received if n.startswith("a:")] == ["a:first", "a:passed"]

    async def test_a_relay_draining_a_backlog_counts_the_rows_left_at_most_once_a_second(
        self, stack: Stack, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if stack.schema is None:
            pytest.skip("the count of the PostgreSQL relay's rounds")
        monkeypatch.setattr(outbox_module, "COUNT_EVERY_S", 3600)  # however slow the machine
        relay = OutboxRelay(stack.engine, stack.outbox, stack.bus, "test", batch=2)
        async with stack.uow() as uow:
            for i in range(5):
                uow.emit(TOPIC, "k", envelope(f"k:{i}"))
        assert await relay.publish_pending() == 2
        assert relay.backlog == 3
        assert await relay.publish_pending() == 2
        assert relay.backlog == 3  # counted a moment ago: not again
        assert await relay.publish_pending() == 1
        assert relay.backlog == 0  # a short batch: drained

    async def test_ids_rolled_back_hold_nothing_up(self, stack: Stack) -> None:
        if stack.schema is None:
            pytest.skip("SQLite has one writer at a time: its rows commit in id order")
        received = await collect(stack.bus)
        relay = self.relay(stack)
        with pytest.raises(RuntimeError):
            async with db.sessionmaker(stack.engine)() as gone, gone.begin():
                rows = [outbox_row(TOPIC, "k", envelope("rolled-back")) for _ in range(3)]
                await db.insert_rows(gone, stack.outbox, rows)
                async with stack.uow() as uow:
                    uow.emit(TOPIC, "k", envelope("k:1"))
                assert await relay.publish_pending() == 1
                raise RuntimeError("rolled back")
        for i in (2, 3):
            async with stack.uow() as uow:
                uow.emit(TOPIC, "k", envelope(f"k:{i}"))
            assert await relay.publish_pending() == 1
        await until(received, "k:3")
        assert received == ["k:1", "k:2", "k:3"]

    async def test_the_read_after_a_publish_does_not_walk_the_rows_it_published(
        self, stack: Stack
    ) -> None:
        if stack.schema is None:
            pytest.skip("SQLite leaves no dead index entries behind")
        url = stack.engine.url.render_as_string(False)
        # One connection: the test asks the relay's own server process to report its counts.
        relay_engine = db.create_engine(url, schema=stack.schema, pool_size=1, max_overflow=0)
        relay = self.relay(stack, relay_engine)

        async def index_entries_read() -> int:
            async with relay_engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.driver_connection is not None
                await raw.driver_connection.execute("SELECT pg_stat_force_next_flush()")
            async with stack.engine.connect() as conn:
                found = await conn.scalar(
                    text(
                        "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes"
                        " WHERE schemaname = :schema AND relname = 'outbox'"
                    ),
                    {"schema": stack.schema},
                )
            return int(found or 0)

        try:
            # An open snapshot taken before the deletes keeps the deleted rows' index entries
            # from being cleaned or marked dead: as under load, before vacuum comes.
            async with stack.engine.connect() as old:
                await old.execution_options(isolation_level="REPEATABLE READ")
                await old.execute(text("SELECT 1"))
                async with stack.uow() as uow:
                    for i in range(2000):
                        uow.emit(TOPIC, "k", envelope(f"k:{i}"))
                while await relay.publish_pending():
                    pass
                async with stack.uow() as uow:
                    uow.emit(TOPIC, "k", envelope("k:next"))
                before = await index_entries_read()
                assert await relay.publish_pending() == 1
                walked = await index_entries_read() - before
        finally:
            await relay_engine.dispose()
        # A read from the head returns all 2,000 dead entries before the live one.
        assert walked < 100


class TestVolatileBusRestart:
    async def test_events_published_but_not_consumed_before_a_restart_are_delivered_after_it(
        self, tmp_path: Path
    ) -> None:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/restart.db")
        metadata = MetaData()
        outbox, inbox = outbox_table(metadata), inbox_table(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        try:
            before = MemoryBus()
            relay = OutboxRelay(engine, outbox, before, "test", poll_interval_s=0.05)
            relay.start()
            async with UnitOfWork(db.sessionmaker(engine), outbox, inbox, relay.notify) as uow:
                uow.emit(TOPIC, "k", envelope("in-flight"))
            async with asyncio.timeout(10):
                while not before.records(TOPIC):
                    await asyncio.sleep(0.02)
            await relay.stop()  # the process stops before any consumer saw the event

            after = MemoryBus()
            received = await collect(after)
            restarted = OutboxRelay(engine, outbox, after, "test", poll_interval_s=0.05)
            restarted.start()
            await until(received, "in-flight")
            await restarted.stop()
            assert received == ["in-flight"]
        finally:
            await engine.dispose()
