"""Our topics read by a standard CloudEvents SDK, knowing nothing of Leadwire's code: every
record of a lead's path is a structured-mode CloudEvent (Kafka protocol binding)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from shared.events import topics
from shared.events.envelope import CLOUDEVENTS_JSON
from tests.conftest import Processes, unique
from tests.helpers import token


@pytest.mark.kafka
@pytest.mark.postgres
async def test_every_record_decodes_as_a_structured_cloudevent_with_all_attributes(
    distributed_processes: Processes,
) -> None:
    ingest = distributed_processes.url("ingest")
    workspace = unique("ws")
    admin = token(workspace, "admin")
    email = f"{unique('grace')}@example.com"
    async with httpx.AsyncClient(timeout=10) as client:
        await distributed_processes.wait_ready()
        form = await client.post(
            f"{ingest}/v1/forms",
            headers=admin,
            json={
                "name": "Contact us",
                "fields": [
                    {
                        "name": "email",
                        "type": "email",
                        "label": "Email",
                        "required": True,
                        "maps_to": "email",
                    }
                ],
            },
        )
        assert form.status_code == 201, form.text
        posted = await client.post(
            f"{ingest}/v1/forms/{form.json()['id']}/submissions", json={"email": email}
        )
        assert posted.status_code == 202, posted.text
        lead = await client.post(
            f"{ingest}/v1/leads", headers=admin, json={"email": unique("lin") + "@example.com"}
        )
        assert lead.status_code == 202, lead.text
        engagement = await client.post(
            f"{ingest}/v1/events",
            headers=admin,
            json={"events": [{"type": "page.viewed", "email": email, "url": "https://x.test/"}]},
        )
        assert engagement.status_code == 202, engagement.text

    expected = {topics.LEADS: 2, topics.ENGAGEMENT: 1, topics.CONTACTS: 2}
    records = {
        topic: await records_of(distributed_processes, topic, workspace, count)
        for topic, count in expected.items()
    }

    for topic, found in records.items():
        assert len(found) >= expected[topic], topic
        for key, headers, value in found:
            assert headers.get("content-type") == CLOUDEVENTS_JSON.encode()
            event = from_kafka(KafkaMessage(headers, key, value), JSONFormat())
            wire = orjson.loads(value)
            attributes = event.get_attributes()
            for name, sent in wire.items():
                if name == "data":
                    assert event.get_data() == sent
                elif name == "time":
                    assert attributes["time"].isoformat().replace("+00:00", "Z") == sent
                else:
                    assert attributes[name] == sent, name
            assert attributes["specversion"] == "1.0"
            assert {"id", "source", "type", "time", "workspace", "correlationid"} <= set(attributes)


async def records_of(
    stack: Processes, topic: str, workspace: str, count: int
) -> list[tuple[bytes, dict[str, bytes], bytes]]:
    """A topic's records of one workspace, read from its start, as (key, headers, value)."""
    name = stack.prefix + topic
    reader = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await reader.start()
    found: list[tuple[bytes, dict[str, bytes], bytes]] = []
    try:
        partitions = [TopicPartition(name, p) for p in range(4)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        async with asyncio.timeout(60):
            while len(found) < count:
                for messages in (await reader.getmany(timeout_ms=500)).values():
                    for m in messages:
                        if m.key is not None and m.key.startswith(f"{workspace}:".encode()):
                            found.append((m.key, dict(m.headers), m.value or b""))
    finally:
        await reader.stop()
    return found
