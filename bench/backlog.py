"""How far behind a stack's consumer groups are: the records on their partitions past the
offsets they have committed. A rate is sustained only once every group has caught up (scores,
timelines and delivery outcomes too), not when the last alert has arrived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Self

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
    caught up shows no backlog a moment later."""

    def __init__(self, kafka: str, prefix: str) -> None:
        self.prefix = prefix
        self._admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        self._reader = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)

    async def __aenter__(self) -> Self:
        await self._admin.start()
        await self._reader.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._reader.stop()
        await self._admin.close()

    async def by_group(self) -> dict[str, int]:
        """Records behind, per group of the run."""
        groups = sorted(
            str(group)
            for group, *_ in await self._admin.list_consumer_groups()
            if str(group).startswith(self.prefix)
        )
        behind: dict[str, int] = {}
        for group in groups:
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            ends = await self._reader.end_offsets(list(committed)) if committed else {}
            behind[group] = records_behind(committed, ends)
        return behind

    async def wait_drained(self, deadline: float, every_s: float = 0.5) -> dict[str, int]:
        """Poll until no group is behind or `deadline` (time.monotonic()) has passed; the groups
        still behind then (empty once drained)."""
        while True:
            left = {group: n for group, n in (await self.by_group()).items() if n}
            if not left or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(every_s)
