"""The speed-to-lead benchmark's backlog check against the session's real broker: a rate is
sustained only once every consumer group of the run has caught up."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from bench.backlog import backlog_of, records_behind
from tests.conftest import unique


def test_records_behind_counts_past_each_committed_offset_and_never_below_zero() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert records_behind({a: 3, b: 5}, {a: 10, b: 5}) == 7
    assert records_behind({a: 12}, {a: 10}) == 0  # ends read before a later commit
    assert records_behind({a: -1}, {a: 4}) == 4  # "no offset" as the broker writes it
    assert records_behind({}, {a: 4}) == 0


@pytest.mark.kafka
class TestBacklogOnKafka:
    async def test_a_run_s_groups_are_behind_until_they_commit_the_end(
        self, kafka_bootstrap: str
    ) -> None:
        prefix = unique("bl") + "."
        topic = prefix + "leads"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(6):
                await producer.send_and_wait(topic, b"x", partition=i % 2)
        finally:
            await producer.stop()
        # A group of the run that has handled part of the topic, and another run's group.
        ours = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=prefix + "scoring.contacts"
        )
        theirs = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=unique("other") + ".scoring.contacts"
        )
        await ours.start()
        await theirs.start()
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        # Assigned, not subscribed: a group member that commits what it was told to.
        ours.assign([p0, p1])
        theirs.assign([p0])
        try:
            await ours.commit({p0: OffsetAndMetadata(2, ""), p1: OffsetAndMetadata(1, "")})
            await theirs.commit({p0: OffsetAndMetadata(0, "")})
            async with backlog_of(kafka_bootstrap, prefix) as backlog:
                assert await backlog.by_group() == {prefix + "scoring.contacts": 3}
                # Still behind when the deadline passes: the group and its records are named.
                left = await backlog.wait_drained(time.monotonic(), every_s=0.05)
                assert left == {prefix + "scoring.contacts": 3}
                await ours.commit({p0: OffsetAndMetadata(3, ""), p1: OffsetAndMetadata(3, "")})
                assert await backlog.wait_drained(time.monotonic() + 30, every_s=0.05) == {}
        finally:
            await ours.stop()
            await theirs.stop()
