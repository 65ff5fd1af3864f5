"""Every id a request body names is looked up in the caller's workspace: another workspace's
object answers as unknown (404 or 422) and nothing changes. The walk is driven by the OpenAPI
document, so an id field added to a body without a case here fails the test."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import token
from tests.service.contacts.conftest import Service, random_email


@dataclass
class World:
    """One workspace's objects, made through the API."""

    contact: str
    other_contact: str
    owner: str
    team: str
    task: str


async def make_world(service: Service, workspace: str) -> World:
    headers = token(workspace, "contacts:read", "contacts:write")

    async def post(path: str, body: dict[str, Any]) -> str:
        response = await service.client.post(path, json=body, headers=headers)
        assert response.status_code == 201, response.text
        made: str = response.json()["id"]
        return made

    team = await post("/v1/teams", {"name": "t", "rule": "round_robin"})
    owner = await post("/v1/owners", {"name": "o", "team_id": team})
    contact = await post("/v1/contacts", {"email": random_email(), "owner_id": owner})
    other = await post("/v1/contacts", {"email": random_email()})
    task = await post("/v1/tasks", {"contact_id": contact, "title": "call", "assignee_id": owner})
    return World(contact, other, owner, team, task)


# (method, path template, body field) → the request naming `foreign`'s object, built from the
# caller's own objects; and a read of the caller's state the request must leave unchanged.
Case = Callable[[World, World], tuple[str, str, dict[str, Any]]]
CASES: dict[tuple[str, str, str], Case] = {
    ("post", "/v1/contacts", "owner_id"): lambda me, foreign: (
        "post",
        "/v1/contacts",
        {"email": random_email(), "owner_id": foreign.owner},
    ),
    ("patch", "/v1/contacts/{contact_id}", "owner_id"): lambda me, foreign: (
        "patch",
        f"/v1/contacts/{me.contact}",
        {"owner_id": foreign.owner},
    ),
    ("post", "/v1/contacts/merge", "survivor_id"): lambda me, foreign: (
        "post",
        "/v1/contacts/merge",
        {"survivor_id": foreign.contact, "merged_id": me.other_contact},
    ),
    ("post", "/v1/contacts/merge", "merged_id"): lambda me, foreign: (
        "post",
        "/v1/contacts/merge",
        {"survivor_id": me.other_contact, "merged_id": foreign.contact},
    ),
    ("post", "/v1/contacts/{contact_id}/owner", "owner_id"): lambda me, foreign: (
        "post",
        f"/v1/contacts/{me.contact}/owner",
        {"owner_id": foreign.owner},
    ),
    ("post", "/v1/contacts/{contact_id}/owner", "team_id"): lambda me, foreign: (
        "post",
        f"/v1/contacts/{me.contact}/owner",
        {"team_id": foreign.team},
    ),
    ("put", "/v1/capture-assignment", "team_id"): lambda me, foreign: (
        "put",
        "/v1/capture-assignment",
        {"team_id": foreign.team},
    ),
    ("post", "/v1/owners", "team_id"): lambda me, foreign: (
        "post",
        "/v1/owners",
        {"name": "x", "team_id": foreign.team},
    ),
    ("patch", "/v1/owners/{owner_id}", "team_id"): lambda me, foreign: (
        "patch",
        f"/v1/owners/{me.owner}",
        {"team_id": foreign.team},
    ),
    ("post", "/v1/tasks", "contact_id"): lambda me, foreign: (
        "post",
        "/v1/tasks",
        {"contact_id": foreign.contact, "title": "x"},
    ),
    ("post", "/v1/tasks", "assignee_id"): lambda me, foreign: (
        "post",
        "/v1/tasks",
        {"contact_id": me.contact, "title": "x", "assignee_id": foreign.owner},
    ),
    ("patch", "/v1/tasks/{task_id}", "assignee_id"): lambda me, foreign: (
        "patch",
        f"/v1/tasks/{me.task}",
        {"assignee_id": foreign.owner},
    ),
}


def body_id_fields(openapi: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(method, path, property) for every request-body property naming an id."""
    schemas = openapi.get("components", {}).get("schemas", {})

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        return resolve(schemas[ref.rsplit("/", 1)[-1]]) if ref else schema

    found = set()
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = resolve(media.get("schema", {}))
                for name in schema.get("properties", {}):
                    if name.endswith(("_id", "_ids")):
                        found.add((method, path, name))
    return found


async def snapshot(service: Service, headers: dict[str, str], me: World) -> list[Any]:
    """Everything the cases could change in the caller's workspace."""
    reads = [
        f"/v1/contacts/{me.contact}",
        f"/v1/contacts/{me.other_contact}",
        "/v1/owners",
        "/v1/teams",
        "/v1/tasks",
        "/v1/contacts/count",
    ]
    return [(await service.client.get(path, headers=headers)).json() for path in reads]


class TestIdsInRequestBodies:
    def test_every_id_field_of_every_body_has_a_case(self, service: Service) -> None:
        assert body_id_fields(service.app.openapi()) == set(CASES)

    @pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: f"{c[0]} {c[1]} {c[2]}")
    async def test_another_workspaces_object_is_unknown_here(
        self, service: Service, case: tuple[str, str, str]
    ) -> None:
        me_workspace, foreign_workspace = (f"ws-{uuid.uuid4().hex[:8]}" for _ in range(2))
        me = await make_world(service, me_workspace)
        foreign = await make_world(service, foreign_workspace)
        headers = token(me_workspace, "contacts:read", "contacts:write")
        before = await snapshot(service, headers, me)
        method, path, body = CASES[case](me, foreign)
        send: Callable[..., Awaitable[Any]] = getattr(service.client, method)
        response = await send(path, json=body, headers=headers)
        assert response.status_code in (404, 422), response.text
        assert await snapshot(service, headers, me) == before
        foreign_headers = token(foreign_workspace, "contacts:read")
        assert (await service.client.get("/v1/tasks", headers=foreign_headers)).json()
