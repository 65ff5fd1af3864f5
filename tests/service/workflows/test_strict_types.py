"""Request types are refused, not coerced ("2" is not two days, 540 is not 09:00, 1 is not
true), and every instant answered carries its UTC offset."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.workflows.conftest import Service


def document(**wait: Any) -> dict[str, Any]:
    return {
        "name": "Strict",
        "trigger": {"type": "manual"},
        "steps": [{"id": "wait", "type": "wait_for_window", **wait, "next": "tag"},
                  {"id": "tag", "type": "add_tag", "tag": "seen"}],
    }  # fmt: skip


class TestStrictDocuments:
    @pytest.mark.parametrize(
        ("wait", "field"),
        [
            ({"start": 540}, "steps[0].start"),  # YAML's reading of an unquoted 09:00
            ({"days": ["mon"], "end": 61200.0}, "steps[0].end"),
        ],
    )
    async def test_a_time_given_as_a_number_is_refused(
        self, service: Service, wait: dict[str, Any], field: str
    ) -> None:
        answer = await service.client.post(
            "/v1/workflows", json=document(**wait), headers=service.headers
        )
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == [field]

    async def test_a_duration_given_as_text_is_refused(self, service: Service) -> None:
        body = {
            "name": "Strict",
            "trigger": {"type": "manual"},
            "steps": [{"id": "wait", "type": "wait", "duration": {"days": "2"}}],
        }
        answer = await service.client.post("/v1/workflows", json=body, headers=service.headers)
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == ["steps[0].duration.days"]

    async def test_the_document_as_written_is_saved(self, service: Service) -> None:
        answer = await service.client.post(
            "/v1/workflows", json=document(start="08:30"), headers=service.headers
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["document"]["steps"][0]["start"] == "08:30:00"


class TestStrictRequests:
    async def test_a_recipe_is_not_enabled_by_a_number(self, service: Service) -> None:
        answer = await service.client.post(
            "/v1/workflows/recipes/welcome", json={"enabled": 1}, headers=service.headers
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "enabled"

    async def test_a_dry_run_version_is_a_number_and_keys_are_known(self, service: Service) -> None:
        created = await service.client.post(
            "/v1/workflows", json=document(), headers=service.headers
        )
        workflow = created.json()["id"]
        for body, field in (({"version": "1"}, "version"), ({"contactid": "c"}, "contactid")):
            answer = await service.client.post(
                f"/v1/workflows/{workflow}/test", json=body, headers=service.headers
            )
            assert answer.status_code == 422, answer.text
            assert answer.json()["errors"][0]["field"] == field

    async def test_an_enrollment_names_exactly_one_of_contact_and_segment(
        self, service: Service
    ) -> None:
        created = await service.client.post(
            "/v1/workflows", json=document(), headers=service.headers, params={"enabled": True}
        )
        workflow = created.json()["id"]
        for body in (
            {},
            {"contact_id": None, "segment_id": None},
            {"contact_id": "a", "segment_id": "b"},
        ):
            answer = await service.client.post(
                f"/v1/workflows/{workflow}/enrollments", json=body, headers=service.headers
            )
            assert answer.status_code == 422, (body, answer.text)
        contact = await service.create_contact()
        answer = await service.client.post(
            f"/v1/workflows/{workflow}/enrollments",
            json={"contact_id": contact, "segment_id": None},
            headers=service.headers,
        )
        assert answer.status_code == 201, answer.text


class TestUtcResponses:
    async def test_a_workflow_read_back_carries_its_times_in_utc(self, service: Service) -> None:
        created = await service.client.post(
            "/v1/workflows", json=document(), headers=service.headers
        )
        read = await service.client.get(
            f"/v1/workflows/{created.json()['id']}", headers=service.headers
        )
        assert read.json()["created_at"].endswith("Z"), read.json()
        assert read.json()["updated_at"].endswith("Z"), read.json()
