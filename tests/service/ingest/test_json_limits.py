"""The door's limits on JSON depth, key length, tags and UTM values: refused with 422 and a
code, never acknowledged and lost later, never a 500, never cut in silence."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from services.contacts.consumers import CapturedLeadEnvelope, decode_lead
from shared.events import topics
from shared.json_limits import MAX_DEPTH, JsonLimitExceeded, check_json
from tests.helpers import token
from tests.service.ingest.conftest import Ingest, random_email
from tests.service.ingest.test_webhooks import create_source, payload, signed


def nested(depth: int) -> Any:
    """A value whose objects nest `depth` levels deep (`{}` is one level)."""
    value: Any = "bottom"
    for _ in range(depth):
        value = {"x": value}
    return value


def codes(response: Any) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


class TestCheckJson:
    def test_a_document_at_the_limit_passes(self) -> None:
        check_json(nested(MAX_DEPTH))
        check_json([nested(MAX_DEPTH - 1)])

    def test_one_level_more_is_refused_naming_where(self) -> None:
        with pytest.raises(JsonLimitExceeded) as caught:
            check_json({"a": [nested(MAX_DEPTH - 1)]})
        assert caught.value.code == "json_too_deep"
        assert caught.value.path.startswith("a.0.x")

    def test_thousands_of_levels_need_no_recursion(self) -> None:
        deep: Any = []
        for _ in range(100_000):
            deep = [deep]
        with pytest.raises(JsonLimitExceeded):
            check_json(deep)

    def test_a_long_key_is_refused(self) -> None:
        with pytest.raises(JsonLimitExceeded) as caught:
            check_json({"ok": {"k" * 257: 1}})
        assert (caught.value.code, caught.value.path) == ("json_key_too_long", "ok")

    def test_an_integer_orjson_cannot_write_is_refused(self) -> None:
        check_json({"n": [2**64 - 1, -(2**63)]})
        with pytest.raises(JsonLimitExceeded) as exc:
            check_json({"n": [1, 2**64]})
        assert (exc.value.code, exc.value.path) == ("json_number_too_large", "n.1")


class TestLeadsApi:
    @pytest.mark.parametrize("depth", [40, 200, 300, 400])
    async def test_deep_custom_fields_are_refused_and_the_next_request_is_served(
        self, ingest: Ingest, depth: int
    ) -> None:
        headers = token(ingest.workspace, "leads:write")
        lead = {"email": random_email(), "custom_fields": {"deep": nested(depth)}}
        response = await ingest.client.post("/v1/leads", json=lead, headers=headers)
        assert response.status_code == 422, response.text
        assert codes(response) == ["json_too_deep"]
        assert ingest.events() == []
        fine = await ingest.client.post(
            "/v1/leads", json={"email": random_email()}, headers=headers
        )
        assert fine.status_code == 202

    async def test_what_is_accepted_at_the_limit_parses_in_contacts(self, ingest: Ingest) -> None:
        # The deepest custom field the door lets through (the body nests it two levels down).
        lead = {"email": random_email(), "custom_fields": {"deep": nested(MAX_DEPTH - 2)}}
        response = await ingest.client.post(
            "/v1/leads", json=lead, headers=token(ingest.workspace, "leads:write")
        )
        assert response.status_code == 202, response.text
        await ingest.wait_events(1)
        [record] = ingest.bus.records(topics.LEADS)
        envelope = decode_lead(record.value)
        assert isinstance(envelope, CapturedLeadEnvelope)  # contacts' parser takes it whole
        assert envelope.data.custom_fields == lead["custom_fields"]
        orjson.dumps(envelope.data.model_dump(mode="json"))  # and its JSON column stores it

    async def test_a_100000_character_custom_field_key_is_refused(self, ingest: Ingest) -> None:
        lead = {"email": random_email(), "custom_fields": {"k" * 100_000: "v"}}
        response = await ingest.client.post(
            "/v1/leads", json=lead, headers=token(ingest.workspace, "leads:write")
        )
        assert response.status_code == 422
        assert codes(response) == ["json_key_too_long"]

    async def test_a_custom_field_key_over_100_characters_is_refused(self, ingest: Ingest) -> None:
        lead = {"email": random_email(), "custom_fields": {"k" * 101: "v"}}
        response = await ingest.client.post(
            "/v1/leads", json=lead, headers=token(ingest.workspace, "leads:write")
        )
        assert response.status_code == 422
        assert response.json()["errors"][0] | {"message": ""} == {
            "field": "custom_fields",
            "code": "key_too_long",
            "message": "",
        }

    async def test_a_tag_over_100_characters_is_refused_not_cut(self, ingest: Ingest) -> None:
        lead = {"email": random_email(), "tags": ["vip", "t" * 101]}
        response = await ingest.client.post(
            "/v1/leads", json=lead, headers=token(ingest.workspace, "leads:write")
        )
        assert response.status_code == 422
        assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [
            ("tags", "too_long")
        ]

    async def test_a_utm_value_over_2048_characters_is_refused_not_cut(
        self, ingest: Ingest
    ) -> None:
        lead = {"email": random_email(), "utm": {"campaign": "c" * 2049}}
        response = await ingest.client.post(
            "/v1/leads", json=lead, headers=token(ingest.workspace, "leads:write")
        )
        assert response.status_code == 422
        assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [
            ("utm_campaign", "too_long")
        ]


class TestOtherDoors:
    async def test_a_deep_form_post_is_refused(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={"email": random_email(), "first_name": "Ann", "extra": nested(300)},
        )
        assert response.status_code == 422
        assert codes(response) == ["json_too_deep"]

    async def test_a_deep_webhook_payload_is_refused(self, ingest: Ingest) -> None:
        source = await create_source(ingest)
        body = json.dumps(payload(random_email()) | {"extra": nested(300)}).encode()
        response = await ingest.client.post(
            f"/v1/webhooks/{source['id']}", content=body, headers=signed(source["secret"], body)
        )
        assert response.status_code == 422
        assert codes(response) == ["json_too_deep"]

    async def test_deep_event_properties_are_refused(self, ingest: Ingest) -> None:
        event = {"type": "page.viewed", "email": random_email(), "properties": nested(300)}
        response = await ingest.client.post(
            "/v1/events",
            json={"events": [event]},
            headers=token(ingest.workspace, "events:write"),
        )
        assert response.status_code == 422
        assert codes(response) == ["json_too_deep"]
        assert ingest.events(topics.ENGAGEMENT) == []
