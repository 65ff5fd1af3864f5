"""ingest honours `contact.deleted`: the person's submissions, quarantine entries, stored
answers and outbox rows go; an old submission of theirs cannot be released afterwards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from services.ingest.models import IdempotencyKey, Submission, outbox
from shared.erasure import digests, identities
from shared.events import topics
from shared.events.contacts import ContactDeleted
from shared.events.envelope import Envelope
from tests.helpers import eventually, token
from tests.service.ingest.conftest import Ingest, random_email


async def count(ingest: Ingest, query: Any) -> int:
    async with ingest.app.state.ctx.engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def erase(
    ingest: Ingest, email: str, phone: str | None = None, at: datetime | None = None
) -> None:
    """Publish the tombstone contacts publishes, and wait until ingest applied it."""
    tombstone = ContactDeleted(
        contact_id=uuid.uuid4().hex,
        deleted_at=at or datetime.now(UTC),
        identity_digests=digests(ingest.workspace, identities(email.lower(), phone)),
    )
    envelope = Envelope.of(tombstone, source="/leadwire/contacts", workspace=ingest.workspace)
    await ingest.bus.publish(
        topics.CONTACTS, f"{ingest.workspace}:{tombstone.contact_id}", envelope
    )

    async def applied() -> bool:
        return any(
            Envelope.from_bytes(r.value).id == envelope.id
            for r in ingest.bus.consumed("ingest.erasures")
        )

    await eventually(applied, timeout=10)


class TestErasePerson:
    async def test_every_submission_answer_and_event_about_the_person_goes(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        email, other = random_email(), random_email()
        url = f"/v1/forms/{form['id']}/submissions"
        accepted = {"email": email, "first_name": "Ann", "consent": True}
        assert (await ingest.client.post(url, json=accepted)).status_code == 202
        assert (await ingest.client.post(url, json={"email": email})).status_code == 422
        spam = {**accepted, "website": "bot"}
        assert (await ingest.client.post(url, json=spam)).status_code == 202
        api = await ingest.client.post(
            "/v1/leads",
            json={"phone": "+44 20 7946 0018", "first_name": "Ann"},
            headers=token(ingest.workspace, "leads:write") | {"idempotency-key": "k1"},
        )
        assert api.status_code == 202
        someone_else = {"email": other, "first_name": "Bob", "consent": True}
        assert (await ingest.client.post(url, json=someone_else)).status_code == 202
        await ingest.wait_events(3)
        assert await count(ingest, select(func.count()).select_from(Submission)) == 5

        await erase(ingest, email, "+442079460018")

        left = await count(ingest, select(func.count()).select_from(Submission))
        assert left == 1  # Bob's
        assert await count(ingest, select(func.count()).select_from(IdempotencyKey)) == 0
        keys = await count(
            ingest,
            select(func.count()).select_from(outbox).where(outbox.c.key.contains(other.lower())),
        )
        assert keys == 1
        assert await count(ingest, select(func.count()).select_from(outbox)) == 1

    async def test_an_old_quarantined_submission_cannot_be_released_after_the_erasure(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        email = random_email()
        rejected = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={"email": email, "first_name": "Ann", "team_size": "51-200", "consent": True},
        )
        assert rejected.status_code == 422
        submission_id = rejected.json()["submission_id"]
        # Stored before submissions named their person (no digests): the erasure misses it...
        async with ingest.app.state.ctx.engine.begin() as conn:
            await conn.execute(update(Submission).values(email_digest=None, phone_digest=None))
        await erase(ingest, email)
        # ...and the release recognises the erased person.
        await ingest.client.patch(
            f"/v1/forms/{form['id']}",
            json={"fields": [{"name": "email", "type": "email", "label": "E", "required": True}]},
            headers=ingest.admin,
        )
        released = await ingest.client.post(
            f"/v1/quarantine/{submission_id}/release", headers=ingest.admin
        )
        assert released.status_code == 409, released.text
        assert released.json()["code"] == "person_erased"
        assert ingest.events() == []

    async def test_a_submission_after_the_erasure_is_a_new_capture(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        email = random_email()
        await erase(ingest, email, at=datetime.now(UTC) - timedelta(minutes=1))
        rejected = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={"email": email, "first_name": "Ann", "team_size": "51-200", "consent": True},
        )
        await ingest.client.patch(
            f"/v1/forms/{form['id']}",
            json={"fields": [{"name": "email", "type": "email", "label": "E", "required": True}]},
            headers=ingest.admin,
        )
        released = await ingest.client.post(
            f"/v1/quarantine/{rejected.json()['submission_id']}/release", headers=ingest.admin
        )
        assert released.status_code == 200, released.text
        assert len(await ingest.wait_events(1)) == 1
