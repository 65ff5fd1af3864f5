"""In-process transport for the embedded mode, with the Kafka transport's semantics.

Topics are split into partitions by key hash, consumer groups share partitions, offsets are
committed only after the handler returns, failing events are retried then dead-lettered.
Each partition keeps its newest `retention` records, as a Kafka topic keeps what its size
limit allows: a long-running embedded process does not grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared import metrics
from shared.bus.base import (
    EVENT_HEADERS,
    Dispatcher,
    Record,
    RecordHandler,
    Subscription,
    dlq_headers,
)
from shared.events.envelope import Envelope
from shared.events.topics import dlq
from shared.waits import wait_at_most

log = logging.getLogger(__name__)


@dataclass
class _Partition:
    """A partition's retained records; `base` is the offset of the first one."""

    records: list[Record] = field(default_factory=list)
    base: int = 0

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def trim(self, retention: int) -> None:
        # Trimmed in steps of a tenth, so that deleting from the head of the list (a copy of
        # what remains) stays rare.
        excess = len(self.records) - retention
        if excess > retention // 10:
            del self.records[:excess]
            self.base += excess


@dataclass
class _Topic:
    partitions: list[_Partition]


@dataclass
class _Group:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)
    # One consumer at a time per partition, as Kafka's assignment guarantees.
    locks: dict[tuple[str, int], asyncio.Lock] = field(default_factory=dict)


class MemoryBus:
    durable = False  # everything goes with the process

    def __init__(
        self,
        partitions: int = 4,
        prefix: str = "",
        max_retries: int = 5,
        backoff_s: float = 0.2,
        max_batch: int = 500,
        retention: int = 20_000,  # ~20 MB of 1 KB events per partition
        max_backoff_s: float = 5.0,
    ) -> None:
        self.partitions = partitions
        self.retention = retention
        self.prefix = prefix
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_batch = max_batch
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        # A sequence number and an event, so a consumer never misses a publish between polls.
        self._seq = 0
        self._published = asyncio.Event()
        self._started = False
        self._followers: list[MemoryFollower] = []

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        for group in self._groups.values():
            for member in list(group.members):
                await member.stop()
        for follower in self._followers:
            await follower.stop()
        self._followers.clear()
        self._started = False

    def missing_topics(self) -> tuple[str, ...]:
        return ()  # topics come into being on first use

    async def ping(self) -> bool:
        return self._started

    def _topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = _Topic([_Partition() for _ in range(self.partitions)])
        return self._topics[name]

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_batch([(topic, key, envelope.to_bytes())])

    async def publish_batch(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        traceparents: Sequence[str | None] | None = None,
    ) -> None:
        for i, (topic, key, value) in enumerate(messages):
            traceparent = traceparents[i] if traceparents else None
            headers = EVENT_HEADERS | {"traceparent": traceparent} if traceparent else EVENT_HEADERS
            self._append(self.prefix + topic, key, value, headers)
            metrics.EVENTS_PUBLISHED.labels(topic).inc()

    def _append(self, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        parts = self._topic(topic).partitions
        p = zlib.crc32(key.encode()) % len(parts)
        part = parts[p]
        part.records.append(Record(topic, p, part.end, key, value, headers))
        part.trim(self.retention)
        self._seq += 1
        self._published.set()
        self._published = asyncio.Event()

    def records(self, topic: str) -> list[Record]:
        """Every record still retained on a topic (logical name)."""
        return [r for part in self._topic(self.prefix + topic).partitions for r in part.records]

    def consumed(self, group: str) -> list[Record]:
        """The retained records a consumer group has committed past."""
        found = self._groups.get(self.prefix + group)
        if found is None:
            return []
        return [
            record
            for (topic, p), offset in found.committed.items()
            for record in self._topics[topic].partitions[p].records
            if record.offset < offset
        ]

    async def dead_letters(self, topic: str) -> list[Record]:
        return self.records(dlq(topic))

    async def subscribe(self, subscription: Subscription) -> MemoryConsumer:
        group = self._groups.setdefault(self.prefix + subscription.group, _Group())
        consumer = MemoryConsumer(self, group, subscription)
        group.members.append(consumer)
        consumer.task = asyncio.create_task(consumer.run(), name=f"consumer:{subscription.group}")
        return consumer

    async def follow(
        self, topic: str, handle: RecordHandler, from_start: bool = True
    ) -> MemoryFollower:
        follower = MemoryFollower(self, self.prefix + topic, handle, from_start)
        follower.task = asyncio.create_task(follower.run(), name=f"follower:{topic}")
        self._followers.append(follower)
        return follower

    async def wait_for_publish(self, seen_seq: int, timeout: float) -> None:
        if self._seq != seen_seq:
            return
        await wait_at_most(self._published, timeout)


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, group: _Group, subscription: Subscription) -> None:
        self.bus = bus
        self.group = group
        self.subscription = subscription
        self.task: asyncio.Task[None] | None = None
        self.dispatcher = Dispatcher(
            subscription, self._to_dlq, bus.max_retries, bus.backoff_s, bus.max_backoff_s
        )

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def ready(self) -> bool:
        # In-process partitions are assigned the moment a consumer joins.
        return self.running and not self.dispatcher.waiting_on_dependency

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._assigned())

    def _assigned(self) -> list[tuple[str, int]]:
        members = self.group.members
        if self not in members:
            return []
        me = members.index(self)
        pairs = [
            (self.bus.prefix + t, p)
            for t in self.subscription.topics
            for p in range(self.bus.partitions)
        ]
        return [pair for i, pair in enumerate(pairs) if i % len(members) == me]

    async def run(self) -> None:
        while True:
            seen = self.bus._seq
            progressed = False
            for topic, p in self._assigned():
                progressed |= await self._poll_partition(topic, p)
            if not progressed:
                await self.bus.wait_for_publish(seen, 0.5)

    async def _poll_partition(self, topic: str, p: int) -> bool:
        lock = self.group.locks.setdefault((topic, p), asyncio.Lock())
        async with lock:
            if (topic, p) not in self._assigned():
                return False
            part = self.bus._topic(topic).partitions[p]
            start = self.group.committed.get((topic, p), part.base)
            if start < part.base:  # fell behind retention: resume at the oldest kept, as Kafka
                log.warning(
                    "group %s lost %d records of %s[%d] to retention",
                    self.subscription.group,
                    part.base - start,
                    topic,
                    p,
                )
                start = part.base
            batch = part.records[start - part.base : start - part.base + self.bus.max_batch]
            if not batch:
                return False
            await self.dispatcher.dispatch(batch)
            self.group.committed[(topic, p)] = start + len(batch)
            return True

    async def _to_dlq(self, record: Record, error: str, attempts: int) -> None:
        headers = dlq_headers(record, self.subscription.group, error, attempts)
        self.bus._append(dlq(record.topic), record.key, record.value, headers)

    async def stop(self) -> None:
        """Leave the group; an in-flight batch is abandoned uncommitted, as after a crash."""
        if self in self.group.members:
            self.group.members.remove(self)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class MemoryFollower:
    """Reads every partition of one topic for this reader alone (no group)."""

    def __init__(self, bus: MemoryBus, topic: str, handle: RecordHandler, from_start: bool) -> None:
        self.bus = bus
        self.topic = topic
        self.handle = handle
        parts = bus._topic(topic).partitions
        self._next = [p.base if from_start else p.end for p in parts]
        self._targets = [p.end for p in parts]
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def caught_up(self) -> bool:
        return all(n >= t for n, t in zip(self._next, self._targets, strict=True))

    async def run(self) -> None:
        while True:
            seen = self.bus._seq
            for index, part in enumerate(self.bus._topic(self.topic).partitions):
                start = max(self._next[index], part.base)
                for record in part.records[start - part.base :]:
                    await self.handle(record)
                    self._next[index] = record.offset + 1
            await self.bus.wait_for_publish(seen, 0.5)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
