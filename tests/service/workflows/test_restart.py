"""Embedded mode: a run waiting on a timer survives a restart of the app (SQLite file, new
in-process bus) and goes on when its time comes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from services.workflows.doors import Doors, limits_of
from services.workflows.engine.timers import fire_once
from services.workflows.main import build_spec
from services.workflows.store import WorkflowsStore
from shared.app import create_app
from tests.helpers import embedded_settings, running, token
from tests.service.workflows.conftest import FakeClock

DOCUMENT = {
    "name": "Later",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "w", "type": "wait", "duration": {"hours": 1}, "next": "t"},
        {"id": "t", "type": "add_tag", "tag": "later"},
    ],
}


async def test_a_waiting_run_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    headers = token(workspace, "workflows:read", "workflows:write")
    settings = embedded_settings(tmp_path)

    def app() -> FastAPI:
        return create_app(build_spec(clock, Doors(clock), timer_loop=False), settings)

    first = app()
    async with running(first) as client:
        created = await client.post(
            "/v1/workflows", json=DOCUMENT, params={"enabled": True}, headers=headers
        )
        workflow = created.json()["id"]
        # A contact the projection knows, enrolled by hand.
        ctx = first.state.ctx
        async with ctx.uow() as uow:
            row = {"workspace": workspace, "id": "c1", "email": None, "merged_into": None}
            data = {"id": "c1", "lifecycle_stage": "lead"}
            await WorkflowsStore(uow.session).save_contacts(
                [row | {"updated_at": clock(), "data": data}]
            )
        enrolled = await client.post(
            f"/v1/workflows/{workflow}/enrollments", json={"contact_id": "c1"}, headers=headers
        )
        run_id = enrolled.json()["enrolled"][0]
    second = app()
    async with running(second) as client:
        ctx = second.state.ctx
        clock.advance(hours=1)
        assert await fire_once(ctx, clock, limits_of(ctx.settings), 100) == 1
        run = (await client.get(f"/v1/enrollments/{run_id}", headers=headers)).json()
        assert run["status"] == "completed"
        assert [s["outcome"] for s in run["steps"]] == ["waiting", "elapsed", "done"]
