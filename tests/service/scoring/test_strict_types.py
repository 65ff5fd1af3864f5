"""Request types are refused, not coerced ("5" is not a number of points, 1 is not a day
count's text), unknown keys are refused, and every instant answered carries its UTC offset."""

from __future__ import annotations

from typing import Any

from tests.service.scoring.conftest import Service

RULES: dict[str, Any] = {
    "rules": [{"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 40}]
}


class TestStrictRequestTypes:
    async def test_points_given_as_text_are_refused(self, service: Service) -> None:
        body = {"rules": [RULES["rules"][0] | {"points": "40"}]}
        answer = await service.client.put("/v1/scoring/rules", json=body, headers=service.headers)
        assert answer.status_code == 422
        assert [(e["field"], e["code"]) for e in answer.json()["errors"]] == [
            ("rules.0.points", "float_type")
        ]

    async def test_a_simulation_sample_given_as_text_is_refused(self, service: Service) -> None:
        for field, value in (("sample", "5"), ("days", "7"), ("sample", 2.5)):
            answer = await service.client.post(
                "/v1/scoring/simulate",
                json={"rules": RULES, field: value},
                headers=service.headers,
            )
            assert answer.status_code == 422, (field, value)
            assert answer.json()["errors"][0]["field"] == field

    async def test_unknown_keys_are_refused(self, service: Service) -> None:
        answer = await service.client.post(
            "/v1/scoring/simulate",
            json={"rules": RULES, "dayz": 7},
            headers=service.headers,
        )
        assert answer.status_code == 422
        assert answer.json()["errors"][0] == {
            "field": "dayz",
            "code": "extra_forbidden",
            "message": "Extra inputs are not permitted",
        }


class TestUtcResponses:
    async def test_a_rescore_read_back_carries_its_times_in_utc(self, service: Service) -> None:
        saved = await service.client.put("/v1/scoring/rules", json=RULES, headers=service.headers)
        assert saved.status_code == 201, saved.text
        rescore = saved.json()["rescore"]["id"]
        # Read back from the database (SQLite keeps no offset), not the object just written.
        read = await service.client.get(f"/v1/scoring/rescores/{rescore}", headers=service.headers)
        assert read.json()["created_at"].endswith("Z"), read.json()
