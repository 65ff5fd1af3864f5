"""Kafka transport through aiokafka, set up for no loss: acks=all, idempotence, manual commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from murmurhash2 import murmurhash2

from shared import metrics
from shared.bus.base import (
    EVENT_HEADERS,
    Dispatcher,
    Record,
    RecordHandler,
    Subscription,
    dlq_headers,
)
from shared.bus.kafka_security import KafkaSecurity
from shared.events.envelope import Envelope
from shared.events.topics import COMPACTED_TOPICS, all_topics_with_dlq, dlq
from shared.waits import wait_at_most

log = logging.getLogger(__name__)
TOPIC_EXISTS = 36
# While events keep coming, a group member commits its offsets at most this often: each
# commit is a request the broker writes to its offsets log, and a poll's batch is often a
# few events. A crash redelivers at most this long's events, which inboxes absorb.
COMMIT_INTERVAL_S = 0.1
# What a patient subscription's fetch waits for (or for its `gather_ms`): about a hundred
# events of a contact's size.
GATHER_BYTES = 64 * 1024
# How long a poll waits for records before it asks again. A poll returns as soon as records
# arrive, so the wait costs no latency; each empty return only woke the loop for nothing (at
# 200 ms, some 110 wake-ups a second across an idle stack: 16 consumer groups, 6 followers).
POLL_WAIT_MS = 5000
_EVENT_HEADERS = [(name, value.encode()) for name, value in EVENT_HEADERS.items()]


class KafkaBus:
    durable = True

    def __init__(
        self,
        bootstrap: str,
        prefix: str = "",
        partitions: int = 4,
        replication: int = 1,
        min_insync_replicas: int | None = None,
        create_topics: bool = True,
        max_retries: int = 5,
        backoff_s: float = 0.2,
        max_batch: int = 500,
        client_id: str = "leadwire",
        topics: Sequence[str] | None = None,
        security: KafkaSecurity | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.bootstrap = bootstrap
        # Connection options every client gets: bootstrap servers, TLS and SASL.
        self.connection: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            **(security or KafkaSecurity()).client_options(),
        }
        self.prefix = prefix
        self.partitions = partitions
        self.replication = replication
        self.min_insync_replicas = min_insync_replicas
        self.create_topics = create_topics
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_batch = max_batch
        self.client_id = client_id
        self.topics = list(topics) if topics is not None else all_topics_with_dlq()
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._consumers: list[KafkaConsumer] = []
        self._missing: tuple[str, ...] = ()
        self._followers: list[KafkaFollower] = []

    async def start(self) -> None:
        """Connect in the background, so a service starts (and reports not-ready) without Kafka."""
        self._connect_task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _connect(self) -> None:
        while True:
            producer = AIOKafkaProducer(
                **self.connection,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=True,
                # No linger: `publish_batch` packs its own record batches, so waiting for more
                # only delayed every hop of a lead's path by the linger.
                linger_ms=0,
                max_batch_size=256 * 1024,
                request_timeout_ms=30000,
            )
            try:
                await producer.start()
                if self.create_topics:
                    await self._ensure_topics()
                else:
                    self._note_missing((await producer.client.fetch_all_metadata()).topics())
            except (KafkaError, OSError) as exc:
                log.warning("kafka not reachable yet", extra={"error": str(exc)})
                await producer.stop()
                await asyncio.sleep(1)
                continue
            self._producer = producer
            self._connected.set()
            return

    async def _ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(**self.connection, client_id=self.client_id)
        await admin.start()
        try:
            configs = {}
            if self.min_insync_replicas is not None:
                configs["min.insync.replicas"] = str(self.min_insync_replicas)
            compacted = configs | {"cleanup.policy": "compact"}
            new = [
                NewTopic(
                    self.prefix + t,
                    self.partitions,
                    self.replication,
                    topic_configs=compacted if t in COMPACTED_TOPICS else configs,
                )
                for t in self.topics
            ]
            response = await admin.create_topics(new)
            for name, code, *_ in response.topic_errors:
                if code not in (0, TOPIC_EXISTS):
                    raise KafkaError(f"cannot create topic {name}: error {code}")
        finally:
            await admin.close()

    async def stop(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        for follower in self._followers:
            await follower.stop()
        self._followers.clear()
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._connected.clear()

    def missing_topics(self) -> tuple[str, ...]:
        return self._missing

    def _note_missing(self, existing: set[str]) -> None:
        """Remember (and log, when it changes) which of our topics the cluster lacks: with
        topic creation off they are the operator's to create, never ours to guess."""
        missing = tuple(self.prefix + t for t in self.topics if self.prefix + t not in existing)
        if missing != self._missing:
            if missing:
                log.error(
                    "kafka topics missing; create them (the chart's KafkaTopic resources)",
                    extra={"topics": list(missing)},
                )
            else:
                log.info("every kafka topic is present")
        self._missing = missing

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            metadata = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3)
        except (TimeoutError, KafkaError, OSError):
            return False
        if not self.create_topics:
            self._note_missing(metadata.topics())
        return bool(metadata.brokers())

    async def dead_letters(self, topic: str) -> list[Record]:
        """Read a DLQ from its start to its current end, outside any consumer group."""
        producer = await self._ready_producer()
        name = self.prefix + dlq(topic)
        partitions = [TopicPartition(name, p) for p in await producer.partitions_for(name)]
        reader = AIOKafkaConsumer(**self.connection, enable_auto_commit=False)
        await reader.start()
        try:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            records: list[Record] = []
            while True:
                positions = {tp: await reader.position(tp) for tp in partitions}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    return records
                batches = await reader.getmany(timeout_ms=500)
                records += [_record(m) for messages in batches.values() for m in messages]
        finally:
            await reader.stop()

    async def wait_for_topics(self, names: Sequence[str]) -> None:
        """With topic creation off, wait until the cluster has these topics before touching
        them: a client asking for a missing topic makes a broker with
        `auto.create.topics.enable` create it with the broker's defaults (one replica...)."""
        if self.create_topics:
            return
        producer = await self._ready_producer()
        while True:
            metadata = await producer.client.fetch_all_metadata()
            self._note_missing(metadata.topics())
            if not any(self.prefix + name in self._missing for name in names):
                return
            await asyncio.sleep(2)

    async def _ready_producer(self) -> AIOKafkaProducer:
        await self._connected.wait()
        assert self._producer is not None
        return self._producer

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_batch([(topic, key, envelope.to_bytes())])

    async def publish_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        traceparents: Sequence[str | None] | None = None,
    ) -> None:
        """Messages packed into one record batch per partition and handed over whole: per
        message, `producer.send` costs a future, a partitioner call through the metadata and a
        callback when acknowledged, which made up most of the relay's time. The partition is
        the default partitioner's (murmur2 of the key), so a key lands where `send` puts it."""
        producer = await self._ready_producer()
        missing = [t for t, _, _ in messages if self.prefix + t in self._missing]
        if missing:  # the outbox keeps them until the operator creates the topic
            raise KafkaError(f"topic {self.prefix + missing[0]} does not exist")
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        acks: list[asyncio.Future[Any]] = []
        for i, (topic, key, value) in enumerate(messages):
            name, key_bytes = self.prefix + topic, key.encode()
            traceparent = traceparents[i] if traceparents else None
            headers = (
                [*_EVENT_HEADERS, ("traceparent", traceparent.encode())]
                if traceparent
                else _EVENT_HEADERS
            )
            if name not in partitions:
                partitions[name] = sorted(await producer.partitions_for(name))
            partition = partition_of(key_bytes, partitions[name])
            builder = open_batches.get((name, partition))
            if builder is None:
                builder = open_batches[(name, partition)] = producer.create_batch()
            record = {"key": key_bytes, "value": value, "timestamp": None, "headers": headers}
            if builder.append(**record) is None:
                acks.append(await producer.send_batch(builder, name, partition=partition))
                builder = open_batches[(name, partition)] = producer.create_batch()
                if builder.append(**record) is None:
                    raise MessageSizeTooLargeError(f"a message of {len(value)} bytes on {name}")
        for (name, partition), builder in open_batches.items():
            acks.append(await producer.send_batch(builder, name, partition=partition))
        await asyncio.gather(*acks)
        for topic, count in Counter(topic for topic, _, _ in messages).items():
            metrics.EVENTS_PUBLISHED.labels(topic).inc(count)

    async def send_raw(self, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        producer = await self._ready_producer()
        encoded = [(k, v.encode()) for k, v in headers.items()]
        await producer.send_and_wait(topic, value, key=key.encode(), headers=encoded)

    async def subscribe(self, subscription: Subscription) -> KafkaConsumer:
        consumer = KafkaConsumer(self, subscription)
        self._consumers.append(consumer)
        consumer.task = asyncio.create_task(consumer.run(), name=f"consumer:{subscription.group}")
        return consumer

    async def follow(
        self, topic: str, handle: RecordHandler, from_start: bool = True
    ) -> KafkaFollower:
        follower = KafkaFollower(self, self.prefix + topic, handle, from_start)
        follower.task = asyncio.create_task(follower.run(), name=f"follower:{topic}")
        self._followers.append(follower)
        return follower

    def forget(self, consumer: KafkaConsumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)


class KafkaConsumer:
    """One consumer-group member: poll a batch, handle each partition's part, then commit it."""

    def __init__(self, bus: KafkaBus, subscription: Subscription) -> None:
        self.bus = bus
        self.subscription = subscription
        self.group = bus.prefix + subscription.group
        self.task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._joined = False  # the group gave this member its partitions (maybe none)
        self.dispatcher = Dispatcher(
            subscription, self._to_dlq, bus.max_retries, bus.backoff_s, bus.max_backoff_s
        )
        # Offsets handled but not yet committed, and the commit under way (see `_commit`).
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._last_commit = 0.0  # time.monotonic() of the last commit sent
        self._flush_now = asyncio.Event()  # cuts short the wait between two commits

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def ready(self) -> bool:
        return self.running and self._joined and not self.dispatcher.waiting_on_dependency

    def assignment(self) -> set[tuple[str, int]]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def run(self) -> None:
        await self.bus._connected.wait()
        await self.bus.wait_for_topics(self.subscription.topics)
        while True:
            consumer = AIOKafkaConsumer(
                **self.bus.connection,
                client_id=self.bus.client_id,
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.bus.max_batch,
                # The broker's smallest allowed session: a member that died without leaving
                # (SIGKILL, OOM) holds its partitions this long before the group moves on.
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                **self._gathering(),
            )
            self._consumer = consumer
            try:
                await consumer.start()
                consumer.subscribe(
                    [self.bus.prefix + t for t in self.subscription.topics],
                    listener=_Membership(self),
                )
                await self._poll(consumer)
            except (KafkaError, OSError) as exc:
                log.warning("consumer lost kafka", extra={"group": self.group, "error": str(exc)})
                await asyncio.sleep(1)
            finally:
                # Handled batches are committed; a batch in flight is redelivered.
                await self.flush_commits(timeout_s=2.0)
                if self._committing is not None:
                    self._committing.cancel()
                self._uncommitted.clear()
                self._consumer = None
                self._joined = False
                await consumer.stop()

    def _gathering(self) -> dict[str, int]:
        """Fetch options: a patient subscription's fetches wait for `GATHER_BYTES` or its
        `gather_ms` (a fetch request and its answer cost both sides CPU, one per few events
        on a busy topic otherwise); the others get the broker's answer at once."""
        wait = self.subscription.gather_ms
        if not wait:
            return {}
        return {"fetch_min_bytes": GATHER_BYTES, "fetch_max_wait_ms": wait}

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(
                timeout_ms=POLL_WAIT_MS, max_records=self.bus.max_batch
            )
            if not batches:
                continue
            # The whole poll is one batch (one transaction for the handler); each partition's
            # records stay in order, and a key never spans partitions, so per-key order holds.
            await self.dispatcher.dispatch([_record(m) for ms in batches.values() for m in ms])
            self._uncommitted.update({tp: ms[-1].offset + 1 for tp, ms in batches.items()})
            if self._committing is None or self._committing.done():
                self._committing = asyncio.create_task(self._commit(consumer))
            for tp, messages in batches.items():
                self._record_lag(consumer, tp, messages[-1].offset)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the offsets of handled batches, beside the polling rather than before the
        next poll (the broker's answer took a millisecond off every hop). Offsets only move
        past events whose handler has committed, so delivery stays at least once: a crash
        redelivers at most what was handled since the last commit, and inboxes absorb it.
        Batches handled while a commit is out or within `COMMIT_INTERVAL_S` of the last
        go in the next one, one commit for many."""
        while self._uncommitted:
            wait = self._last_commit + COMMIT_INTERVAL_S - time.monotonic()
            if wait > 0 and not self._flush_now.is_set():
                await wait_at_most(self._flush_now, wait)
            assigned = consumer.assignment()
            offsets = {tp: at for tp, at in self._uncommitted.items() if tp in assigned}
            self._uncommitted.clear()
            if not offsets:
                return
            self._last_commit = time.monotonic()
            try:
                await consumer.commit(offsets)
            except CommitFailedError:
                # A partition moved to another member; it will see these events again and
                # the inbox turns them into no-ops.
                log.warning("commit lost to a rebalance", extra={"group": self.group})
            except KafkaError as exc:
                log.warning("offset commit failed", extra={"group": self.group, "error": str(exc)})
                # The next batch's commit carries them (unless it has newer offsets).
                for tp, at in offsets.items():
                    self._uncommitted.setdefault(tp, at)
                return

    async def flush_commits(self, timeout_s: float = 5.0) -> None:
        """Commit every handled offset now (before partitions move or the member leaves), so
        the next owner does not get those events again; best effort: an inbox absorbs them."""
        consumer = self._consumer
        if consumer is None:
            return
        self._flush_now.set()
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    if self._committing is not None:
                        await asyncio.shield(self._committing)
                    await self._commit(consumer)
        finally:
            self._flush_now.clear()

    def _record_lag(self, consumer: AIOKafkaConsumer, tp: TopicPartition, last: int) -> None:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(self.group, tp.topic).set(max(highwater - last - 1, 0))

    async def _to_dlq(self, record: Record, error: str, attempts: int) -> None:
        headers = dlq_headers(record, self.subscription.group, error, attempts)
        await self.bus.send_raw(dlq(record.topic), record.key, record.value, headers)

    async def stop(self) -> None:
        """Leave the group; an in-flight batch is abandoned uncommitted, as after a crash."""
        self.bus.forget(self)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class _Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells a consumer when the group has (or has taken back) its partitions."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.consumer._joined = False
        await self.consumer.flush_commits()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.consumer._joined = True


class KafkaFollower:
    """Every partition of one topic assigned by hand (no group, nothing committed): each
    process reads the whole topic, from its start or from its end."""

    def __init__(self, bus: KafkaBus, topic: str, handle: RecordHandler, from_start: bool) -> None:
        self.bus = bus
        self.topic = topic
        self.handle = handle
        self.from_start = from_start
        self.task: asyncio.Task[None] | None = None
        self._caught_up = False
        self._positions: dict[int, int] = {}

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    async def run(self) -> None:
        await self.bus._connected.wait()
        while True:
            reader = AIOKafkaConsumer(
                **self.bus.connection, client_id=self.bus.client_id, enable_auto_commit=False
            )
            try:
                await reader.start()
                await self._read(reader)
            except (KafkaError, OSError) as exc:
                log.warning("follower lost kafka", extra={"topic": self.topic, "error": str(exc)})
                await asyncio.sleep(1)
            finally:
                await reader.stop()

    async def _read(self, reader: AIOKafkaConsumer) -> None:
        partitions = await self._partitions(reader)
        reader.assign(partitions)
        for tp in partitions:
            if tp.partition in self._positions:  # reconnected: resume where we were
                reader.seek(tp, self._positions[tp.partition])
            elif self.from_start:
                await reader.seek_to_beginning(tp)
            else:
                await reader.seek_to_end(tp)
        targets = await reader.end_offsets(partitions)
        while True:
            if not self._caught_up:
                positions = {tp: await reader.position(tp) for tp in partitions}
                self._caught_up = all(positions[tp] >= end for tp, end in targets.items())
            batches = await reader.getmany(timeout_ms=POLL_WAIT_MS, max_records=self.bus.max_batch)
            for tp, messages in batches.items():
                for message in messages:
                    await self.handle(_record(message))
                self._positions[tp.partition] = messages[-1].offset + 1

    async def _partitions(self, reader: AIOKafkaConsumer) -> list[TopicPartition]:
        """The topic's partitions, waiting while it does not exist (readiness says so). Asked
        of the whole cluster's metadata: asking for the one topic would make a broker with
        `auto.create.topics.enable` create it, with the broker's defaults."""
        while True:
            metadata = await reader._client.fetch_all_metadata()
            found = metadata.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            await asyncio.sleep(1)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# Kafka's murmur2 seed. The C implementation gives the same hashes as aiokafka's pure-Python
# one (a unit test holds it to it) about 30 times faster: 3% of ingest's CPU at saturation.
KAFKA_MURMUR2_SEED = 0x9747B28C


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The default partitioner's choice (Kafka's own, murmur2) among a topic's partitions."""
    hashed: int = murmurhash2(key, KAFKA_MURMUR2_SEED)
    return partitions[(hashed & 0x7FFFFFFF) % len(partitions)]


def _record(message: Any) -> Record:
    return Record(
        message.topic,
        message.partition,
        message.offset,
        (message.key or b"").decode(),
        message.value or b"",
        {k: v.decode() for k, v in (message.headers or ())},
    )
