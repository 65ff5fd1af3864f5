"""API keys across processes on real Kafka and PostgreSQL: a key made by the access service
is honoured by every service process and refused by all of them once revoked."""

from __future__ import annotations

import httpx
import pytest

from services.registry import SERVICES
from tests.conftest import Processes, unique
from tests.helpers import eventually, token

OPERATOR = token("ops", "operator")


@pytest.mark.kafka
@pytest.mark.postgres
class TestApiKeysAcrossServices:
    async def test_revocation_reaches_every_service(self, distributed_processes: Processes) -> None:
        access = distributed_processes.url("access")
        workspace = unique("ws").replace("_", "-").lower()[:40]
        async with httpx.AsyncClient(timeout=10) as client:
            await distributed_processes.wait_ready()
            registered = await client.post(
                f"{access}/v1/workspaces", json={"id": workspace, "name": "K"}, headers=OPERATOR
            )
            assert registered.status_code == 201, registered.text
            made = await client.post(
                f"{access}/v1/workspaces/{workspace}/keys",
                json={"name": "sync", "scopes": ["contacts:read"]},
                headers=OPERATOR,
            )
            assert made.status_code == 201, made.text
            key = {"Authorization": f"Bearer {made.json()['key']}"}

            async def every_service_answers(status: int) -> bool:
                for name in SERVICES:
                    url = f"{distributed_processes.url(name)}/v1/whoami"
                    if (await client.get(url, headers=key)).status_code != status:
                        return False
                return True

            await eventually(lambda: every_service_answers(200), timeout=30)
            whoami = await client.get(
                f"{distributed_processes.url('scoring')}/v1/whoami", headers=key
            )
            assert whoami.json()["workspace"] == workspace
            assert whoami.json()["scopes"] == ["contacts:read"]

            revoked = await client.delete(
                f"{access}/v1/workspaces/{workspace}/keys/{made.json()['id']}", headers=OPERATOR
            )
            assert revoked.status_code == 200
            await eventually(lambda: every_service_answers(401), timeout=30)

            async def last_use_recorded() -> bool:
                listed = await client.get(
                    f"{access}/v1/workspaces/{workspace}/keys", headers=OPERATOR
                )
                return listed.json()[0]["last_used_at"] is not None

            await eventually(last_use_recorded, timeout=30)
