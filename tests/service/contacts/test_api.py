"""The contacts REST API: CRUD, lookup, pagination, fields, tags, lists, isolation."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import token
from tests.service.contacts.conftest import Service, random_email


async def create(service: Service, **body: Any) -> dict[str, Any]:
    response = await service.client.post("/v1/contacts", json=body, headers=service.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


class TestContactCrud:
    async def test_a_created_contact_reads_back_with_normalised_identity(
        self, service: Service
    ) -> None:
        contact = await create(
            service, email=" Ada@Example.COM ", phone="030 901820", country="DE", first_name="Ada"
        )
        assert contact["email"] == "ada@example.com"
        assert contact["phone"] == "+4930901820"
        read = await service.client.get(f"/v1/contacts/{contact['id']}", headers=service.headers)
        assert read.json()["first_name"] == "Ada"

    async def test_a_second_contact_with_the_same_email_is_a_conflict(
        self, service: Service
    ) -> None:
        email = random_email()
        await create(service, email=email)
        response = await service.client.post(
            "/v1/contacts", json={"email": email.upper()}, headers=service.headers
        )
        assert response.status_code == 409

    async def test_a_contact_without_email_or_phone_is_rejected(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/contacts", json={"first_name": "Nobody"}, headers=service.headers
        )
        assert response.status_code == 422

    async def test_patch_changes_only_what_is_sent_and_null_clears(self, service: Service) -> None:
        contact = await create(service, email=random_email(), first_name="A", company="C")
        response = await service.client.patch(
            f"/v1/contacts/{contact['id']}",
            json={"first_name": "B", "company": None},
            headers=service.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["first_name"] == "B"
        assert response.json()["company"] is None
        updated = await service.payloads("contact.updated")
        assert set(updated[-1].changes) == {"first_name", "company"}  # type: ignore[attr-defined]

    async def test_lookup_by_email_and_by_phone(self, service: Service) -> None:
        contact = await create(service, email=random_email(), phone="+4930901822")
        by_phone = await service.client.get(
            "/v1/contacts/lookup", params={"phone": "+49 30 901822"}, headers=service.headers
        )
        assert by_phone.json()["id"] == contact["id"]
        missing = await service.client.get(
            "/v1/contacts/lookup", params={"email": random_email()}, headers=service.headers
        )
        assert missing.status_code == 404

    async def test_lookup_by_an_internationalised_domain_finds_its_ascii_form(
        self, service: Service
    ) -> None:
        # ingest stores `ann@xn--bcher-kva.example` for `Ann@Bücher.example`.
        email = f"ann.{uuid.uuid4().hex[:6]}@xn--bcher-kva.example"
        contact = await service.captured(email=email)
        local = email.split("@")[0]
        for written in (f"{local}@bücher.example", f"{local.upper()}@BÜCHER.example"):
            found = await service.client.get(
                "/v1/contacts/lookup", params={"email": written}, headers=service.headers
            )
            assert found.status_code == 200, found.text
            assert found.json()["id"] == contact["id"]

    async def test_a_tag_over_100_characters_is_refused_not_cut(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/contacts",
            json={"email": random_email(), "tags": ["ok", "t" * 101]},
            headers=service.headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "string_too_long"

    async def test_custom_fields_nested_too_deep_are_refused(self, service: Service) -> None:
        deep: dict[str, Any] = {}
        for _ in range(300):
            deep = {"x": deep}
        response = await service.client.post(
            "/v1/contacts",
            json={"email": random_email(), "custom_fields": {"deep": deep}},
            headers=service.headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "json_too_deep"

    async def test_setting_churned_without_a_reason_is_rejected(self, service: Service) -> None:
        contact = await create(service, email=random_email(), lifecycle_stage="customer")
        response = await service.client.patch(
            f"/v1/contacts/{contact['id']}",
            json={"lifecycle_stage": "churned"},
            headers=service.headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "churn_reason"
        ok = await service.client.patch(
            f"/v1/contacts/{contact['id']}",
            json={"lifecycle_stage": "churned", "churn_reason": "competitor"},
            headers=service.headers,
        )
        assert ok.json()["churn_reason"] == "competitor"
        changed = await service.payloads("contact.lifecycle_changed")
        assert changed[-1].to_stage == "churned"  # type: ignore[attr-defined]
        assert changed[-1].from_stage == "customer"  # type: ignore[attr-defined]


class TestLifecycleHistory:
    async def test_each_stage_is_kept_with_its_time_and_duration(self, service: Service) -> None:
        contact = await create(service, email=random_email())
        service.clock.advance(days=2)
        await service.client.patch(
            f"/v1/contacts/{contact['id']}",
            json={"lifecycle_stage": "mql"},
            headers=service.headers,
        )
        service.clock.advance(days=1)
        history = (
            await service.client.get(
                f"/v1/contacts/{contact['id']}/lifecycle", headers=service.headers
            )
        ).json()
        assert [(h["from"], h["to"]) for h in history] == [(None, "lead"), ("lead", "mql")]
        assert [h["time_in_stage_s"] for h in history] == [2 * 86400, 86400]


class TestPagination:
    async def test_cursor_pages_walk_every_contact_once_in_order(self, service: Service) -> None:
        ids = []
        for i in range(7):
            service.clock.advance(seconds=1)
            ids.append((await create(service, email=random_email(f"p{i}")))["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, "sort": "created_at"}
            if cursor:
                params["cursor"] = cursor
            page = (
                await service.client.get("/v1/contacts", params=params, headers=service.headers)
            ).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids

    async def test_filter_and_sort_by_last_name_descending(self, service: Service) -> None:
        for name, stage in (("Adams", "lead"), ("Baker", "customer"), ("Clark", "customer")):
            await create(service, email=random_email(), last_name=name, lifecycle_stage=stage)
        page = await service.client.get(
            "/v1/contacts",
            params={"lifecycle_stage": "customer", "sort": "-last_name"},
            headers=service.headers,
        )
        assert [c["last_name"] for c in page.json()["items"]] == ["Clark", "Baker"]

    async def test_a_bad_cursor_is_a_422_not_a_500(self, service: Service) -> None:
        response = await service.client.get(
            "/v1/contacts", params={"cursor": "garbage"}, headers=service.headers
        )
        assert response.status_code == 422


class TestCustomFields:
    async def test_the_four_out_of_the_box_fields_exist(self, service: Service) -> None:
        fields = (await service.client.get("/v1/fields", headers=service.headers)).json()
        names = {f["name"]: f["type"] for f in fields}
        assert names["subscription_end_date"] == "date"
        assert names["product_requests"] == "multi_select"
        assert "industry" in names
        assert "company_size" in names

    async def test_out_of_the_box_fields_are_stored_as_ordinary_custom_fields(
        self, service: Service
    ) -> None:
        contact = await create(
            service,
            email=random_email(),
            custom_fields={
                "subscription_end_date": "2026-04-01",
                "product_requests": ["api", "sso"],
                "industry": "Fintech",
                "company_size": "11-50",
            },
        )
        assert contact["custom_fields"]["product_requests"] == ["api", "sso"]

    async def test_a_write_breaking_a_definition_answers_422_naming_the_field(
        self, service: Service
    ) -> None:
        response = await service.client.post(
            "/v1/contacts",
            json={"email": random_email(), "custom_fields": {"subscription_end_date": "soon"}},
            headers=service.headers,
        )
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["field"] == "custom_fields.subscription_end_date"
        assert error["code"] == "not_a_date"

    async def test_a_required_number_field_with_bounds_is_enforced(self, service: Service) -> None:
        defined = await service.client.post(
            "/v1/fields",
            json={"name": "seats", "type": "number", "required": True, "min": 1, "max": 500},
            headers=service.headers,
        )
        assert defined.status_code == 201, defined.text
        missing = await service.client.post(
            "/v1/contacts", json={"email": random_email()}, headers=service.headers
        )
        assert missing.json()["errors"][0]["code"] == "required"
        too_big = await service.client.post(
            "/v1/contacts",
            json={"email": random_email(), "custom_fields": {"seats": 900}},
            headers=service.headers,
        )
        assert too_big.json()["errors"][0] == {
            "field": "custom_fields.seats",
            "code": "too_large",
            "message": "at most 500.0",
        }
        ok = await create(service, email=random_email(), custom_fields={"seats": "12"})
        assert ok["custom_fields"]["seats"] == 12

    async def test_an_unknown_custom_field_is_rejected(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/contacts",
            json={"email": random_email(), "custom_fields": {"shoe_size": 42}},
            headers=service.headers,
        )
        assert response.json()["errors"][0]["code"] == "unknown_field"


class TestTagsAndLists:
    async def test_tags_and_lists_are_added_and_removed(self, service: Service) -> None:
        contact = await create(service, email=random_email())
        url = f"/v1/contacts/{contact['id']}"
        await service.client.post(f"{url}/tags", json={"tag": "Pricing"}, headers=service.headers)
        await service.client.post(
            f"{url}/lists", json={"list": "Newsletter"}, headers=service.headers
        )
        read = (await service.client.get(url, headers=service.headers)).json()
        assert (read["tags"], read["lists"]) == (["pricing"], ["newsletter"])
        await service.client.delete(f"{url}/tags/pricing", headers=service.headers)
        await service.client.delete(f"{url}/lists/newsletter", headers=service.headers)
        read = (await service.client.get(url, headers=service.headers)).json()
        assert (read["tags"], read["lists"]) == ([], [])
        tags_changes = [
            e.changes["tags"]  # type: ignore[attr-defined]
            for e in await service.payloads("contact.updated")
            if "tags" in e.changes  # type: ignore[attr-defined]
        ]
        assert [(c.before, c.after) for c in tags_changes] == [
            ([], ["pricing"]),
            (["pricing"], []),
        ]

    async def test_the_tag_filter_lists_only_tagged_contacts(self, service: Service) -> None:
        tagged = await create(service, email=random_email(), tags=["vip"])
        await create(service, email=random_email())
        page = await service.client.get(
            "/v1/contacts", params={"tag": "vip"}, headers=service.headers
        )
        assert [c["id"] for c in page.json()["items"]] == [tagged["id"]]


class TestWorkspaceIsolation:
    async def test_another_workspaces_token_sees_nothing(self, service: Service) -> None:
        contact = await create(service, email=random_email(), tags=["x"])
        other = token("ws-other", "contacts:read", "contacts:write")
        read = await service.client.get(f"/v1/contacts/{contact['id']}", headers=other)
        assert read.status_code == 404
        listing = await service.client.get("/v1/contacts", headers=other)
        assert listing.json()["items"] == []
        lookup = await service.client.get(
            "/v1/contacts/lookup", params={"email": contact["email"]}, headers=other
        )
        assert lookup.status_code == 404
        for method, path in (
            ("PATCH", f"/v1/contacts/{contact['id']}"),
            ("DELETE", f"/v1/contacts/{contact['id']}"),
            ("GET", f"/v1/contacts/{contact['id']}/timeline"),
            ("GET", f"/v1/contacts/{contact['id']}/export"),
        ):
            response = await service.client.request(
                method, path, headers=other, json={} if method == "PATCH" else None
            )
            assert response.status_code == 404, (method, path)
        assert (await service.client.get("/v1/tags", headers=other)).json() == []

    async def test_the_same_email_may_exist_in_two_workspaces(self, service: Service) -> None:
        email = random_email()
        await create(service, email=email)
        other = token("ws-other", "contacts:write")
        response = await service.client.post("/v1/contacts", json={"email": email}, headers=other)
        assert response.status_code == 201

    async def test_a_read_only_token_cannot_write(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/contacts",
            json={"email": random_email()},
            headers=token(service.workspace, "contacts:read"),
        )
        assert response.status_code == 403
