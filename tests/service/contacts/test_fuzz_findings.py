"""Server errors the schema fuzzer found, kept as plain regression tests."""

from __future__ import annotations

from tests.service.contacts.conftest import Service


class TestFieldMaxLength:
    async def test_a_length_past_any_column_is_refused(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/fields",
            json={"name": "notes", "type": "text", "max_length": 5266208390350975082168320},
            headers=service.headers,
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "max_length"

    async def test_a_reasonable_length_is_kept(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/fields",
            json={"name": "notes", "type": "text", "max_length": 5000},
            headers=service.headers,
        )
        assert response.status_code == 201, response.text
        assert response.json()["max_length"] == 5000
