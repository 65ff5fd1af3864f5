"""Workspaces and API keys end to end in the embedded mode: the access service and contacts
share one in-process bus, as in `make run`; a key made on one is honoured and, once revoked,
refused on the other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from services.registry import spec
from shared.app import create_app
from shared.bus.memory import MemoryBus
from tests.helpers import embedded_settings, eventually, running, token

OPERATOR = token("ops", "operator")


@asynccontextmanager
async def two_services(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    bus = MemoryBus()
    await bus.start()
    settings = embedded_settings(tmp_path, key_use_report_interval_s=0.05)
    try:
        async with (
            running(create_app(spec("access"), settings, bus)) as access,
            running(create_app(spec("contacts"), settings, bus)) as contacts,
        ):
            yield access, contacts
    finally:
        await bus.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(access: httpx.AsyncClient, workspace: str, *scopes: str) -> dict[str, object]:
    made = await access.post(
        f"/v1/workspaces/{workspace}/keys",
        json={"name": "crm sync", "scopes": list(scopes)},
        headers=OPERATOR,
    )
    assert made.status_code == 201, made.text
    body: dict[str, object] = made.json()
    return body


class TestApiKeys:
    async def test_a_key_works_everywhere_until_revoked(self, tmp_path: Path) -> None:
        async with two_services(tmp_path) as (access, contacts):
            created = await access.post(
                "/v1/workspaces", json={"id": "acme", "name": "Acme"}, headers=OPERATOR
            )
            assert created.status_code == 201, created.text
            key = await new_key(access, "acme", "contacts:read")
            assert str(key["key"]).startswith("lw_key_")

            async def contacts_answers(status: int) -> bool:
                response = await contacts.get("/v1/contacts", headers=bearer(str(key["key"])))
                return response.status_code == status

            await eventually(lambda: contacts_answers(200), timeout=10)
            # Scopes hold: a read key cannot write.
            write = await contacts.post(
                "/v1/contacts", json={"email": "a@example.com"}, headers=bearer(str(key["key"]))
            )
            assert write.status_code == 403

            async def last_use_recorded() -> bool:
                listed = await access.get("/v1/workspaces/acme/keys", headers=OPERATOR)
                return listed.json()[0]["last_used_at"] is not None

            await eventually(last_use_recorded, timeout=10)
            listed = (await access.get("/v1/workspaces/acme/keys", headers=OPERATOR)).json()
            assert "key" not in listed[0]
            assert str(key["key"]) not in str(listed)

            revoked = await access.delete(f"/v1/workspaces/acme/keys/{key['id']}", headers=OPERATOR)
            assert revoked.status_code == 200
            assert revoked.json()["revoked_at"] is not None
            await eventually(lambda: contacts_answers(401), timeout=10)
            problem = (await contacts.get("/v1/contacts", headers=bearer(str(key["key"])))).json()
            assert problem["detail"] == "this API key was revoked"

    async def test_workspace_admins_manage_only_their_own_keys(self, tmp_path: Path) -> None:
        async with two_services(tmp_path) as (access, _):
            for workspace in ("acme", "globex"):
                await access.post(
                    "/v1/workspaces", json={"id": workspace, "name": workspace}, headers=OPERATOR
                )
            acme_admin = token("acme", "admin")
            own = await access.post(
                "/v1/workspaces/acme/keys",
                json={"name": "site", "scopes": ["leads:write"], "ttl_days": 30},
                headers=acme_admin,
            )
            assert own.status_code == 201, own.text
            assert own.json()["expires_at"] is not None
            other = await access.get("/v1/workspaces/globex/keys", headers=acme_admin)
            assert other.status_code == 404
            registry = await access.get("/v1/workspaces", headers=acme_admin)
            assert registry.status_code == 403

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "x", "scopes": ["contacts:delete"]}, "scopes"),
            ({"name": "x", "scopes": ["admin\n"]}, "scopes"),
            ({"name": "x", "scopes": []}, "scopes"),
            ({"name": "x", "scopes": ["leads:write"], "ttl_days": 0}, "ttl_days"),
            ({"name": "x", "scopes": ["leads:write"], "ttl_days": "30"}, "ttl_days"),
            ({"name": "x", "scopes": ["leads:write"], "expires_at": 4102444800}, "expires_at"),
            (
                {"name": "x", "scopes": ["leads:write"], "expires_at": "2001-01-01T00:00:00Z"},
                "expires_at",
            ),
            (
                {
                    "name": "x",
                    "scopes": ["leads:write"],
                    "ttl_days": 1,
                    "expires_at": "2099-01-01T00:00:00Z",
                },
                "ttl_days",
            ),
            ({"name": "x", "scopes": ["leads:write"], "ttl": 1}, "ttl"),
        ],
    )
    async def test_bad_keys_are_refused_clearly(
        self, tmp_path: Path, body: dict[str, object], field: str
    ) -> None:
        async with two_services(tmp_path) as (access, _):
            await access.post("/v1/workspaces", json={"id": "acme", "name": "A"}, headers=OPERATOR)
            refused = await access.post("/v1/workspaces/acme/keys", json=body, headers=OPERATOR)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in refused.json()["errors"]] == [field]

    async def test_keys_and_workspaces_answer_their_times_in_utc(self, tmp_path: Path) -> None:
        async with two_services(tmp_path) as (access, _):
            await access.post("/v1/workspaces", json={"id": "acme", "name": "A"}, headers=OPERATOR)
            await access.post(
                "/v1/workspaces/acme/keys",
                json={"name": "x", "scopes": ["leads:write"], "ttl_days": 3},
                headers=OPERATOR,
            )
            keys = (await access.get("/v1/workspaces/acme/keys", headers=OPERATOR)).json()
            assert keys[0]["created_at"].endswith("Z")
            assert keys[0]["expires_at"].endswith("Z")
            workspaces = (await access.get("/v1/workspaces", headers=OPERATOR)).json()
            assert all(w["created_at"].endswith("Z") for w in workspaces)

    async def test_keys_need_a_registered_workspace(self, tmp_path: Path) -> None:
        async with two_services(tmp_path) as (access, _):
            missing = await access.post(
                "/v1/workspaces/nowhere/keys",
                json={"name": "x", "scopes": ["leads:write"]},
                headers=OPERATOR,
            )
            assert missing.status_code == 404
            again = await access.post(
                "/v1/workspaces", json={"id": "acme", "name": "A"}, headers=OPERATOR
            )
            assert again.status_code == 201
            twice = await access.post(
                "/v1/workspaces", json={"id": "acme", "name": "A"}, headers=OPERATOR
            )
            assert twice.status_code == 409
