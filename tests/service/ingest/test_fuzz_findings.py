"""Server errors the schema fuzzer found, kept as plain regression tests."""

from __future__ import annotations

from tests.helpers import token
from tests.service.ingest.conftest import Ingest


class TestWebhookSourceMappingNull:
    async def test_a_null_mapping_is_refused_and_the_source_stays_readable(
        self, ingest: Ingest
    ) -> None:
        headers = token(ingest.workspace, "webhooks:read", "webhooks:write")
        created = await ingest.client.post(
            "/v1/webhook-sources", json={"name": "s", "mapping": {"email": "a"}}, headers=headers
        )
        source = created.json()["id"]
        patched = await ingest.client.patch(
            f"/v1/webhook-sources/{source}", json={"mapping": None}, headers=headers
        )
        assert patched.status_code == 422, patched.text
        assert patched.json()["errors"][0]["field"] == "mapping"
        read = await ingest.client.get(f"/v1/webhook-sources/{source}", headers=headers)
        assert read.status_code == 200
        assert read.json()["mapping"] == {"email": "a"}
        listed = await ingest.client.get("/v1/webhook-sources", headers=headers)
        assert listed.status_code == 200

    async def test_an_empty_mapping_is_how_to_clear_it(self, ingest: Ingest) -> None:
        headers = token(ingest.workspace, "webhooks:read", "webhooks:write")
        created = await ingest.client.post(
            "/v1/webhook-sources", json={"name": "s", "mapping": {"email": "a"}}, headers=headers
        )
        source = created.json()["id"]
        patched = await ingest.client.patch(
            f"/v1/webhook-sources/{source}", json={"mapping": {}}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["mapping"] == {}
