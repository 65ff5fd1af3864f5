"""The relay's bulk publish puts contact events where Kafka's own partitioner would, in order."""

from __future__ import annotations

from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared.bus.kafka import KafkaBus
from shared.events import topics
from tests.conftest import unique


@pytest.mark.kafka
async def test_bulk_published_events_keep_their_key_partition_and_order(
    kafka_bootstrap: str,
) -> None:
    prefix = unique("ce") + "."
    bus = KafkaBus(kafka_bootstrap, prefix=prefix, topics=[topics.CONTACTS])
    await bus.start()
    try:
        await bus.wait_connected(60)
        keys = [topics.contact_key("ws", f"contact-{i}") for i in range(40)]
        # ~2 MB over 4 partitions: several record batches per partition.
        messages = [
            (topics.CONTACTS, keys[i % len(keys)], f"{i:06d}".encode() + b"x" * 1500)
            for i in range(1200)
        ]
        await bus.publish_batch(messages)
        received = await read_all(kafka_bootstrap, prefix + topics.CONTACTS, len(messages))
    finally:
        await bus.stop()

    partitions = list(range(bus.partitions))
    for partition, key, _ in received:
        assert partition == DefaultPartitioner()(key.encode(), partitions, partitions)
    sent: defaultdict[str, list[bytes]] = defaultdict(list)
    got: defaultdict[str, list[bytes]] = defaultdict(list)
    for _, key, value in messages:
        sent[key].append(value[:6])
    for _, key, value in received:
        got[key].append(value[:6])
    assert got == sent, "every event once, each key's in publish order"


async def read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, str, bytes]]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(4)]  # KafkaBus's default
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        received: list[tuple[int, str, bytes]] = []
        for _ in range(100):
            batches = await reader.getmany(timeout_ms=500)
            received += [
                (m.partition, (m.key or b"").decode(), m.value or b"")
                for messages in batches.values()
                for m in messages
            ]
            if len(received) >= count:
                break
        return received
    finally:
        await reader.stop()
