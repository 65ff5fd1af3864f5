"""lead.captured upserts one contact per person, on SQLite and the in-process bus."""

from __future__ import annotations

import asyncio

from shared.events.contacts import ContactCreated, ContactUpdated
from tests.service.contacts.conftest import Service, random_email


class TestCaptureUpsert:
    async def test_a_first_capture_creates_a_contact_and_publishes_contact_created(
        self, service: Service
    ) -> None:
        email = random_email()
        contact = await service.captured(
            email=email, first_name="Ada", company="Analytical", tags=["Webinar"]
        )
        assert contact["first_name"] == "Ada"
        assert contact["lifecycle_stage"] == "lead"
        assert contact["tags"] == ["webinar"]
        created = await service.payloads("contact.created")
        assert len(created) == 1
        assert isinstance(created[0], ContactCreated)
        assert created[0].contact.email == email

    async def test_the_same_email_lands_on_the_same_contact(self, service: Service) -> None:
        # Case is settled by ingest's identity rule before a lead is published (see
        # tests/unit/ingest/test_domain.py); contacts takes the address as it comes.
        email = random_email()
        first = await service.captured(email=email, first_name="Ada")
        second = await service.captured(email=email, last_name="Lovelace")
        assert first["id"] == second["id"]
        assert second["first_name"] == "Ada"
        assert second["last_name"] == "Lovelace"

    async def test_the_same_phone_matches_when_the_email_is_new(self, service: Service) -> None:
        first = await service.captured(email=random_email(), phone="+4930901820")
        second = await service.captured(email=random_email(), phone="+4930901820")
        assert first["id"] == second["id"]
        assert second["email"] == first["email"], "a filled email is never replaced"

    async def test_email_wins_over_phone_when_they_point_to_different_contacts(
        self, service: Service
    ) -> None:
        by_email = await service.captured(email=random_email())
        by_phone = await service.captured(email=random_email(), phone="+4930901821")
        both = await service.captured(email=by_email["email"], phone="+4930901821")
        assert both["id"] == by_email["id"]
        assert both["phone"] is None, "the phone belongs to another contact"
        assert by_phone["phone"] == "+4930901821"

    async def test_a_new_person_makes_a_new_contact(self, service: Service) -> None:
        a = await service.captured(email=random_email())
        b = await service.captured(email=random_email())
        assert a["id"] != b["id"]

    async def test_empty_values_never_overwrite_filled_ones(self, service: Service) -> None:
        email = random_email()
        await service.captured(email=email, first_name="Ada", company="Analytical")
        again = await service.captured(email=email, first_name="", company=None)
        assert again["first_name"] == "Ada"
        assert again["company"] == "Analytical"

    async def test_every_capture_is_a_timeline_activity(self, service: Service) -> None:
        email = random_email()
        await service.captured(email=email)
        contact = await service.captured(email=email)
        timeline = await service.client.get(
            f"/v1/contacts/{contact['id']}/timeline", headers=service.headers
        )
        kinds = [item["kind"] for item in timeline.json()["items"]]
        assert kinds.count("lead.captured") == 2

    async def test_an_update_publishes_the_changed_fields_with_before_and_after(
        self, service: Service
    ) -> None:
        email = random_email()
        await service.captured(email=email, company="Old Co")
        await service.captured(email=email, company="New Co")
        updated = await service.payloads("contact.updated")
        assert len(updated) == 1
        assert isinstance(updated[0], ContactUpdated)
        change = updated[0].changes["company"]
        assert (change.before, change.after) == ("Old Co", "New Co")
        assert updated[0].contact.company == "New Co"

    async def test_a_redelivered_capture_has_no_second_effect(self, service: Service) -> None:
        envelope = await service.capture(email=random_email())
        await service.publish("leadwire.leads.v1", envelope)
        await service.processed("leads", envelope)
        await asyncio.sleep(0.2)
        contact = (
            await service.client.get(
                "/v1/contacts/lookup",
                params={"email": envelope.data["email"]},
                headers=service.headers,
            )
        ).json()
        timeline = await service.client.get(
            f"/v1/contacts/{contact['id']}/timeline", headers=service.headers
        )
        timeline_kinds = [i["kind"] for i in timeline.json()["items"]]
        assert timeline_kinds == ["lead.captured"]

    async def test_many_captures_of_one_person_in_one_batch_make_one_contact(
        self, service: Service
    ) -> None:
        email = random_email()
        envelopes = [await service.capture(email=email, first_name=f"N{i}") for i in range(20)]
        for envelope in envelopes:
            await service.processed("leads", envelope)
        page = await service.client.get(
            "/v1/contacts", params={"q": email}, headers=service.headers
        )
        assert len(page.json()["items"]) == 1
        assert page.json()["items"][0]["first_name"] == "N19"

    async def test_a_missing_phone_is_filled_by_a_later_capture(self, service: Service) -> None:
        email = random_email()
        await service.captured(email=email)
        later = await service.captured(email=email, phone="+4930901829")
        assert later["phone"] == "+4930901829"

    async def test_invalid_custom_values_in_a_capture_are_kept_off_the_record_and_reported(
        self, service: Service
    ) -> None:
        contact = await service.captured(
            email=random_email(),
            custom_fields={"company_size": "huge", "industry": "Retail", "utm_term": "x"},
        )
        assert contact["custom_fields"] == {"industry": "Retail", "utm_term": "x"}
        timeline = await service.client.get(
            f"/v1/contacts/{contact['id']}/timeline", headers=service.headers
        )
        rejected = timeline.json()["items"][0]["data"]["rejected_fields"]
        assert rejected[0]["field"] == "custom_fields.company_size"
