"""The leads and engagement APIs: single and batch, limits, idempotency keys, events."""

from __future__ import annotations

from typing import Any

from shared.events import topics
from tests.helpers import token
from tests.service.ingest.conftest import Ingest, body_of, random_email


def leads_token(ingest: Ingest) -> dict[str, str]:
    return token(ingest.workspace, "leads:write")


class TestPostLeads:
    async def test_one_lead_is_normalised_and_published(self, ingest: Ingest) -> None:
        email = random_email()
        response = await ingest.client.post(
            "/v1/leads",
            json={
                "email": email,
                "first_name": " Ann ",
                "country": "Germany",
                "phone": "030 123456",
                "default_region": "DE",
                "tags": ["Webinar"],
                "utm": {"source": "api"},
                "consent": {"granted": True, "text": "Newsletter"},
                "custom_fields": {"plan": "pro"},
            },
            headers=leads_token(ingest),
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "accepted"
        assert body["dedupe_key"] == "email:" + email.lower()
        [event] = await ingest.wait_events(1)
        lead = body_of(event)
        assert lead["source"] == "api"
        assert lead["country"] == "DE"
        assert lead["phone"] == "+4930123456"
        assert lead["tags"] == ["webinar"]
        assert lead["utm"] == {"source": "api"}
        assert lead["consent"]["granted"] is True

    async def test_a_batch_is_accepted_whole(self, ingest: Ingest) -> None:
        leads = [{"email": random_email()} for _ in range(3)]
        response = await ingest.client.post(
            "/v1/leads", json={"leads": leads}, headers=leads_token(ingest)
        )
        assert response.status_code == 202
        assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 3
        assert len(await ingest.wait_events(3)) == 3

    async def test_a_batch_with_one_bad_lead_is_refused_whole_listing_its_fields(
        self, ingest: Ingest
    ) -> None:
        leads = [{"email": random_email()}, {"email": "broken"}, {"first_name": "No identity"}]
        response = await ingest.client.post(
            "/v1/leads", json={"leads": leads}, headers=leads_token(ingest)
        )
        assert response.status_code == 422
        assert {e["field"]: e["code"] for e in response.json()["errors"]} == {
            "leads.1.email": "invalid_email",
            "leads.2.email": "identity_required",
        }
        assert ingest.events() == []
        quarantine = await ingest.client.get("/v1/quarantine?source=api", headers=ingest.admin)
        assert len(quarantine.json()["items"]) == 2

    async def test_a_batch_of_500_is_accepted_and_501_refused(self, ingest: Ingest) -> None:
        leads = [{"email": f"bulk{i}@example.com"} for i in range(501)]
        too_many = await ingest.client.post(
            "/v1/leads", json={"leads": leads}, headers=leads_token(ingest)
        )
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["field"] == "leads"
        assert too_many.json()["errors"][0]["code"] == "too_long"
        ok = await ingest.client.post(
            "/v1/leads", json={"leads": leads[:500]}, headers=leads_token(ingest)
        )
        assert ok.status_code == 202
        assert len(ok.json()["results"]) == 500

    async def test_unknown_fields_are_refused(self, ingest: Ingest) -> None:
        response = await ingest.client.post(
            "/v1/leads",
            json={"email": random_email(), "favourite": "x"},
            headers=leads_token(ingest),
        )
        assert response.status_code == 422

    async def test_the_scope_is_required(self, ingest: Ingest) -> None:
        response = await ingest.client.post(
            "/v1/leads",
            json={"email": random_email()},
            headers=token(ingest.workspace, "forms:write"),
        )
        assert response.status_code == 403


class TestIdempotencyKeys:
    async def test_the_same_key_and_body_answer_the_same_without_a_second_lead(
        self, ingest: Ingest
    ) -> None:
        headers = leads_token(ingest) | {"idempotency-key": "order-42"}
        body = {"email": random_email()}
        first = await ingest.client.post("/v1/leads", json=body, headers=headers)
        again = await ingest.client.post("/v1/leads", json=body, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        await ingest.wait_events(1)
        assert len(ingest.events()) == 1

    async def test_the_same_key_with_another_body_answers_409(self, ingest: Ingest) -> None:
        headers = leads_token(ingest) | {"idempotency-key": "order-43"}
        await ingest.client.post("/v1/leads", json={"email": random_email()}, headers=headers)
        other = await ingest.client.post(
            "/v1/leads", json={"email": random_email()}, headers=headers
        )
        assert other.status_code == 409
        assert other.json()["code"] == "idempotency_key_reused"

    async def test_a_refused_request_is_answered_the_same_again(self, ingest: Ingest) -> None:
        headers = leads_token(ingest) | {"idempotency-key": "bad-1"}
        first = await ingest.client.post("/v1/leads", json={"email": "nope"}, headers=headers)
        again = await ingest.client.post("/v1/leads", json={"email": "nope"}, headers=headers)
        assert first.status_code == again.status_code == 422
        assert again.json()["errors"] == first.json()["errors"]

    async def test_keys_belong_to_their_workspace(self, ingest: Ingest) -> None:
        body = {"email": random_email()}
        mine = await ingest.client.post(
            "/v1/leads", json=body, headers=leads_token(ingest) | {"idempotency-key": "k"}
        )
        theirs = await ingest.client.post(
            "/v1/leads",
            json={"email": random_email()},
            headers=token("other-ws", "leads:write") | {"idempotency-key": "k"},
        )
        assert mine.status_code == theirs.status_code == 202


def engagement(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "email": "Reader@Example.com"} | extra


class TestPostEvents:
    async def test_each_engagement_type_is_published_on_the_engagement_topic(
        self, ingest: Ingest
    ) -> None:
        events = [
            engagement("page.viewed", url="https://www.example.com/pricing"),
            engagement("email.opened"),
            engagement("email.clicked", url="https://www.example.com/x"),
            engagement("content.downloaded"),
            engagement("webinar.registered"),
            engagement("meeting.booked"),
            engagement("demo.requested"),
            {
                "type": "purchase.completed",
                "contact_id": "c-1",
                "amount": "99.90",
                "currency": "eur",
            },
            {"type": "product.login", "contact_id": "c-1"},
        ]
        response = await ingest.client.post(
            "/v1/events", json={"events": events}, headers=token(ingest.workspace, "events:write")
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 9
        published = await ingest.wait_events(9, topics.ENGAGEMENT)
        assert [e.type for e in published if e.data.get("email")] == [
            "page.viewed",
            "email.opened",
            "email.clicked",
            "content.downloaded",
            "webinar.registered",
            "meeting.booked",
            "demo.requested",
        ]
        purchase = next(e for e in published if e.type == "purchase.completed")
        assert purchase.data["currency"] == "EUR"
        assert purchase.data["amount"] == "99.90"
        keys = {r.key for r in ingest.bus.records(topics.ENGAGEMENT)}
        assert keys == {f"{ingest.workspace}:email:reader@example.com", f"{ingest.workspace}:c-1"}

    async def test_a_batch_over_1000_is_refused(self, ingest: Ingest) -> None:
        events = [engagement("page.viewed") for _ in range(1001)]
        response = await ingest.client.post(
            "/v1/events", json={"events": events}, headers=token(ingest.workspace, "events:write")
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "too_long"

    async def test_an_invalid_event_refuses_the_batch_listing_every_field(
        self, ingest: Ingest
    ) -> None:
        events = [engagement("page.viewed"), {"type": "page.liked", "email": "bad"}]
        response = await ingest.client.post(
            "/v1/events", json={"events": events}, headers=token(ingest.workspace, "events:write")
        )
        assert response.status_code == 422
        assert {e["field"]: e["code"] for e in response.json()["errors"]} == {
            "events.1.type": "not_an_option",
            "events.1.email": "invalid_email",
        }
        assert ingest.events(topics.ENGAGEMENT) == []

    async def test_a_body_over_8_mib_answers_413(self, ingest: Ingest) -> None:
        events = [engagement("page.viewed", properties={"blob": "x" * 9000}) for _ in range(1000)]
        response = await ingest.client.post(
            "/v1/events", json={"events": events}, headers=token(ingest.workspace, "events:write")
        )
        assert response.status_code == 413
