"""End to end across processes: a form post on ingest becomes one contact in contacts, over
real Kafka and PostgreSQL, with the correlation id carried through."""

from __future__ import annotations

import httpx
import pytest

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

            async def ready() -> bool:
                try:
                    answers = [await client.get(f"{base}/readyz") for base in (ingest, contacts)]
                except httpx.TransportError:
                    return False
                return all(a.status_code == 200 for a in answers)

            await eventually(ready, timeout=90)
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
