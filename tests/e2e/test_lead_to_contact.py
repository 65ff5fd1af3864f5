"""End to end across processes: a form post on ingest becomes one contact in contacts, over
real Kafka and PostgreSQL, with the correlation id carried through."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.events import topics
from shared.events.envelope import Envelope
from tests.conftest import Processes, unique
from tests.helpers import eventually, token


@pytest.mark.kafka
@pytest.mark.postgres
class TestLeadToContact:
    async def test_a_form_submission_becomes_one_clean_contact(
        self, distributed_processes: Processes
    ) -> None:
        ingest = distributed_processes.url("ingest")
        contacts = distributed_processes.url("contacts")
        workspace = unique("ws")
        admin = token(workspace, "admin")
        email = f"{unique('ada')}@Example.COM"
        async with httpx.AsyncClient(timeout=10) as client:
            await distributed_processes.wait_ready()
            form = await client.post(
                f"{ingest}/v1/forms",
                headers=admin,
                json={
                    "name": "Demo",
                    "fields": [
                        {
                            "name": "email",
                            "type": "email",
                            "label": "Email",
                            "required": True,
                            "maps_to": "email",
                        },
                        {"name": "phone", "type": "phone", "label": "Phone", "maps_to": "phone"},
                        {
                            "name": "first_name",
                            "type": "text",
                            "label": "First name",
                            "maps_to": "first_name",
                        },
                    ],
                    "default_region": "GB",
                },
            )
            assert form.status_code == 201, form.text
            submit = f"{ingest}/v1/forms/{form.json()['id']}/submissions"
            correlation = unique("corr")
            first = await client.post(
                submit,
                json={"email": f"  {email} ", "first_name": "  Ada   "},
                headers={"X-Correlation-Id": correlation},
            )
            assert first.status_code == 202, first.text
            # The same person again, now with a phone number: merged into the same contact.
            second = await client.post(
                submit, json={"email": email, "phone": "020 7946 0018", "first_name": ""}
            )
            assert second.status_code == 202, second.text

            found: list[dict[str, object]] = []

            async def has_phone() -> bool:
                page = await client.get(f"{contacts}/v1/contacts", headers=admin)
                found[:] = page.json()["items"]
                return len(found) == 1 and found[0]["phone"] is not None

            await eventually(has_phone, timeout=60)
            [contact] = found
            assert contact["email"] == email.lower()
            assert contact["phone"] == "+442079460018"
            assert contact["first_name"] == "Ada"  # the empty value did not overwrite it

            other = await client.get(
                f"{contacts}/v1/contacts", headers=token(unique("ws"), "admin")
            )
            assert other.json()["items"] == []

        created = await first_event(
            distributed_processes, topics.CONTACTS, workspace, "contact.created"
        )
        assert created.correlationid == correlation, "the lead's correlation id is carried on"
        assert created.data["contact"]["email"] == email.lower()


async def first_event(stack: Processes, topic: str, workspace: str, event_type: str) -> Envelope:
    """Read a topic from its start until an event of `event_type` for `workspace` shows up."""
    name = stack.prefix + topic
    reader = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(name, p) for p in range(4)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        async with asyncio.timeout(60):
            while True:
                for messages in (await reader.getmany(timeout_ms=500)).values():
                    for message in messages:
                        event = Envelope.from_bytes(message.value)
                        if event.workspace == workspace and event.type == event_type:
                            return event
    finally:
        await reader.stop()
