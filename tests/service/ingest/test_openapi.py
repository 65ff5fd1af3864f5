"""The ingest API documents itself: every route in OpenAPI, every reference resolvable."""

from __future__ import annotations

import json

from tests.service.ingest.conftest import Ingest


class TestOpenApi:
    async def test_every_route_is_documented_and_every_reference_resolves(
        self, ingest: Ingest
    ) -> None:
        response = await ingest.client.get("/openapi.json")
        assert response.status_code == 200
        document = response.json()
        assert {
            "/v1/forms",
            "/v1/forms/{form_id}",
            "/v1/forms/{form_id}/submissions",
            "/v1/forms/{form_id}/embed.js",
            "/v1/webhooks/{source_id}",
            "/v1/webhook-sources",
            "/v1/leads",
            "/v1/events",
            "/v1/quarantine",
            "/v1/quarantine/{submission_id}/release",
        } <= set(document["paths"])
        schemas = document["components"]["schemas"]
        text = json.dumps(document)
        for chunk in text.split('"$ref": "#/components/schemas/')[1:]:
            assert chunk.split('"', 1)[0] in schemas
        lead_body = document["paths"]["/v1/leads"]["post"]["requestBody"]["content"]
        assert "email" in json.dumps(lead_body)

    async def test_a_submission_documents_its_body_and_a_browsers_html_refusal(
        self, ingest: Ingest
    ) -> None:
        document = (await ingest.client.get("/openapi.json")).json()
        submit = document["paths"]["/v1/forms/{form_id}/submissions"]["post"]
        assert submit["requestBody"]["required"] is True
        assert set(submit["requestBody"]["content"]) == {
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/json",
        }
        assert set(submit["responses"]["422"]["content"]) == {
            "application/problem+json",
            "text/html",
        }
