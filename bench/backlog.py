"""How far behind a stack's consumer groups are: the records on their partitions past the
offsets they have committed. A rate is sustained only once every group has caught up (scores,
timelines and delivery outcomes too), not when the last alert has arrived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


def records_behind(
    committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> int:
    """The records a group has yet to commit past: each partition's end less its committed
    offset. Only partitions the group has committed on are listed, so a group stuck before its
    first commit on a partition goes unseen there (the services commit within 0.1 s of
    handling, and a stuck group on the alert path shows as missing alerts)."""
    return sum(max(ends.get(tp, 0) - max(at, 0), 0) for tp, at in committed.items())


class Backlog:
    """The consumer groups whose names start with `prefix` (a run's: the services name their
    groups after the topic prefix), read from the broker's committed offsets. Handled batches
    are committed within 0.1 s (`shared.bus.kafka.COMMIT_INTERVAL_S`), so a group that has
    caught up shows no backlog a moment later. Made by `backlog_of`."""

    def __init__(self, admin: AIOKafkaAdminClient, reader: AIOKafkaConsumer, prefix: str) -> None:
        self.prefix = prefix
        self._admin = admin
        self._reader = reader

    async def by_group(self) -> dict[str, int]:
        """Records behind, per group of the run."""
        groups = sorted(
            str(group)
            for group, *_ in await self._admin.list_consumer_groups()
            if str(group).startswith(self.prefix)
        )
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
        # The groups share their topics: each partition's end asked once, for all of them.
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = await self._reader.end_offsets(list(partitions)) if partitions else {}
        return {group: records_behind(offsets, ends) for group, offsets in committed.items()}

    async def wait_drained(self, deadline: float, every_s: float = 0.5) -> dict[str, int]:
        """Poll until no group is behind or `deadline` (time.monotonic()) has passed; the groups
        still behind then (empty once drained)."""
        while True:
            left = {group: n for group, n in (await self.by_group()).items() if n}
            if not left or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(every_s)


@asynccontextmanager
async def backlog_of(kafka: str, prefix: str) -> AsyncIterator[Backlog]:
    """A `Backlog` of the run whose groups start with `prefix`, on its own admin client and
    offsets reader, closed on leaving."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    reader = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await admin.start()
    try:
        await reader.start()
        try:
            yield Backlog(admin, reader, prefix)
        finally:
            await reader.stop()
    finally:
        await admin.close()
