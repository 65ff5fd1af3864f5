"""Request types are refused, not coerced: 0 is not false, 0.5 is not a date."""

from __future__ import annotations

from tests.service.contacts.conftest import Service


class TestStrictRequestTypes:
    async def test_an_owner_cannot_be_deactivated_with_a_number(self, service: Service) -> None:
        created = await service.client.post(
            "/v1/owners", json={"name": "Ada"}, headers=service.headers
        )
        assert created.status_code == 201, created.text
        owner = created.json()["id"]
        answer = await service.client.patch(
            f"/v1/owners/{owner}", json={"active": 0}, headers=service.headers
        )
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["field"] == "active"
        kept = await service.client.patch(
            f"/v1/owners/{owner}", json={"active": False}, headers=service.headers
        )
        assert kept.status_code == 200
        assert kept.json()["active"] is False

    async def test_a_report_period_is_a_date_time_not_a_number(self, service: Service) -> None:
        for number in ("0.5", "1700000000"):
            answer = await service.client.get(
                "/v1/reports/churn", params={"start": number}, headers=service.headers
            )
            assert answer.status_code == 422, number
        dated = await service.client.get(
            "/v1/reports/churn",
            params={"start": "2026-01-01T00:00:00Z"},
            headers=service.headers,
        )
        assert dated.status_code == 200, dated.text

    async def test_a_number_bound_of_a_field_is_not_a_boolean(self, service: Service) -> None:
        answer = await service.client.post(
            "/v1/fields",
            json={"name": "seats", "type": "number", "max": False},
            headers=service.headers,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "max"

    async def test_a_weight_without_fraction_is_an_integer(self, service: Service) -> None:
        created = await service.client.post(
            "/v1/owners", json={"name": "Ada", "weight": 3.0}, headers=service.headers
        )
        assert created.status_code == 201, created.text
        assert created.json()["weight"] == 3
