"""Webhook sources: Standard Webhooks signatures, replay refusal and dotted-path mapping."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from services.ingest.webhooks import domain as webhooks_domain
from tests.helpers import token
from tests.service.ingest.conftest import Ingest, body_of, random_email

MAPPING = {
    "email": "data.contact.email",
    "first_name": "data.contact.name.first",
    "phone": "data.contact.phone",
    "custom.plan": "data.plan.id",
    "utm_source": "data.attribution.0.source",
}


def payload(email: str) -> dict[str, Any]:
    return {
        "type": "contact.created",
        "data": {
            "contact": {"email": email, "name": {"first": " Ann "}, "phone": "(650) 253-0000"},
            "plan": {"id": "pro"},
            "attribution": [{"source": "partner"}],
        },
    }


def signed(
    secret: str, body: bytes, msg_id: str | None = None, at: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = int(time.time()) if at is None else at
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": webhooks_domain.sign(secret, msg_id, at, body),
    }


async def create_source(ingest: Ingest) -> dict[str, Any]:
    response = await ingest.client.post(
        "/v1/webhook-sources",
        json={"name": "Billing", "mapping": MAPPING, "default_region": "US"},
        headers=token(ingest.workspace, "webhooks:write"),
    )
    assert response.status_code == 201, response.text
    source: dict[str, Any] = response.json()
    assert source["secret"].startswith("whsec_")
    return source


class TestWebhookSources:
    async def test_the_secret_is_shown_once_and_the_mapping_kept(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        read = await ingest.client.get(
            f"/v1/webhook-sources/{source['id']}", headers=token(ingest.workspace, "webhooks:read")
        )
        assert read.status_code == 200
        assert "secret" not in read.json()
        assert read.json()["mapping"] == MAPPING

    async def test_a_mapping_to_an_unknown_lead_field_is_refused(self, ingest: Ingest) -> None:
        response = await ingest.client.post(
            "/v1/webhook-sources",
            json={"name": "x", "mapping": {"favourite_colour": "a.b"}},
            headers=ingest.admin,
        )
        assert response.status_code == 422


class TestSignedWebhooks:
    async def test_a_validly_signed_webhook_is_mapped_and_published(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        email = random_email()
        body = orjson.dumps(payload(email))
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=signed(source["secret"], body)
        )
        assert response.status_code == 202, response.text
        [event] = await ingest.wait_events(1)
        lead = body_of(event)
        assert lead["source"] == "webhook"
        assert lead["source_id"] == source["id"]
        assert lead["dedupe_key"] == "email:" + email.lower()
        assert lead["first_name"] == "Ann"
        assert lead["phone"] == "+16502530000"
        assert lead["custom_fields"] == {"plan": "pro"}
        assert lead["utm"] == {"source": "partner"}

    async def test_a_wrong_signature_answers_401(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        body = orjson.dumps(payload(random_email()))
        other_secret = webhooks_domain.new_secret(b"0" * 32)
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=signed(other_secret, body)
        )
        assert response.status_code == 401
        assert response.json()["reason"] == "signature_invalid"
        assert ingest.events() == []

    async def test_a_tampered_body_answers_401(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        body = orjson.dumps(payload(random_email()))
        headers = signed(source["secret"], body)
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body.replace(b"pro", b"max"), headers=headers
        )
        assert response.status_code == 401

    async def test_a_stale_timestamp_answers_401(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        body = orjson.dumps(payload(random_email()))
        headers = signed(source["secret"], body, at=int(time.time()) - 301)
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["reason"] == "signature_stale"

    async def test_a_replayed_webhook_id_is_refused(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        body = orjson.dumps(payload(random_email()))
        headers = signed(source["secret"], body)
        first = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=headers
        )
        again = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=headers
        )
        assert first.status_code == 202
        assert again.status_code == 409
        assert again.json()["code"] == "webhook_replayed"
        assert len(await ingest.wait_events(1)) == 1

    async def test_unsigned_posts_answer_401(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        response = await ingest.client.post(f"/v1/webhooks/{source['id']}", json=payload("a@b.com"))
        assert response.status_code == 401
        assert response.json()["reason"] == "signature_missing"

    async def test_a_signed_webhook_without_identity_is_quarantined_with_422(
        self, ingest: Ingest
    ) -> None:
        source = await create_source(ingest)
        body = orjson.dumps({"data": {"contact": {"name": {"first": "Ann"}}}})
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=signed(source["secret"], body)
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "identity_required"
        quarantine = await ingest.client.get("/v1/quarantine?source=webhook", headers=ingest.admin)
        assert len(quarantine.json()["items"]) == 1

    async def test_an_unknown_source_answers_404(self, ingest: Ingest) -> None:
        body = b"{}"
        response = await ingest.client.post(
            "/v1/webhooks/whs_nope",
            content=body,
            headers=signed(webhooks_domain.new_secret(b"1" * 32), body),
        )
        assert response.status_code == 404


class TestSignedFormPosts:
    async def test_a_server_signed_form_post_skips_the_origin_check(self, ingest: Ingest) -> None:
        secret = webhooks_domain.new_secret(b"k" * 32)
        form = await ingest.create_form(signing_secret=secret)
        assert form["has_signing_secret"] is True
        body = orjson.dumps({"email": random_email(), "first_name": "Ann", "consent": True})
        headers = signed(secret, body) | {"origin": "https://server.internal"}
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", content=body, headers=headers
        )
        assert response.status_code == 202, response.text
        forged = signed(webhooks_domain.new_secret(b"x" * 32), body) | {
            "origin": "https://server.internal"
        }
        refused = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", content=body, headers=forged
        )
        assert refused.status_code == 401
