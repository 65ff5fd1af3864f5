"""The workflows engine on the real Kafka and PostgreSQL: contact events in, commands,
notification requests and run progress out; waits fired by PostgreSQL timers through the real
timer loop; refusals coming back as failed steps; the DLQ; two claimers sharing due timers
(SKIP LOCKED) fire each once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.workflows.doors import Doors, limits_of
from services.workflows.engine.timers import fire_once
from services.workflows.main import build_spec
from services.workflows.settings import WorkflowsSettings
from shared.app import create_app
from shared.events import topics
from shared.events.envelope import Envelope
from shared.events.ingest import LeadCaptured
from shared.events.notifications import NotificationFailed
from tests.conftest import unique
from tests.helpers import distributed_settings, eventually, running, token
from tests.integration.workflows.conftest import DRIP, Driver, start_driver
from tests.service.workflows.conftest import FakeClock

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class Engine:
    def __init__(self, client: httpx.AsyncClient, driver: Driver, app: Any) -> None:
        self.client, self.driver, self.app = client, driver, app
        self.headers = token(driver.workspace, "workflows:read", "workflows:write")

    async def workflow(self, document: dict[str, Any]) -> str:
        response = await self.client.post(
            "/v1/workflows", json=document, params={"enabled": True}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        workflow_id: str = response.json()["id"]
        return workflow_id

    async def runs(self, workflow_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/v1/workflows/{workflow_id}/enrollments", headers=self.headers
        )
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@asynccontextmanager
async def started(
    bootstrap: str,
    postgres: str,
    clock: Any = None,
    timer_loop: bool = True,
    poll_s: float = 0.2,
    doors: Doors | None = None,
) -> AsyncIterator[Engine]:
    prefix = unique("wf") + "."
    settings = distributed_settings(
        bootstrap, postgres, prefix, WorkflowsSettings, workflows_timer_poll_s=poll_s
    )
    doors = doors or (Doors(clock) if clock else Doors())
    app = create_app(build_spec(doors.clock, doors, timer_loop), settings)
    driver, reader = await start_driver(bootstrap, prefix, f"ws-{uuid.uuid4().hex[:8]}")
    try:
        async with running(app) as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=60)
            yield Engine(client, driver, app)
    finally:
        await reader.stop()
        await driver.bus.stop()


@pytest.fixture
async def engine(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Engine]:
    async with started(kafka_bootstrap, postgres_url) as e:
        yield e


async def test_a_drip_runs_through_real_timers_on_kafka_and_postgres(engine: Engine) -> None:
    workflow = await engine.workflow(DRIP)
    contacts = await engine.driver.contacts(5)

    async def all_done() -> bool:
        runs = await engine.runs(workflow)
        return len(runs) == 5 and all(r["status"] == "completed" for r in runs)

    await eventually(all_done, timeout=60)

    async def published() -> bool:
        return len(engine.driver.of("notification.requested")) == 5

    await eventually(published, timeout=30)
    tags = sorted(
        (e.data["contact_id"], e.data["tag"]) for e in engine.driver.of("contact.add_tag")
    )
    assert tags == sorted((c, t) for c in contacts for t in ("one", "two"))
    run = (await engine.runs(workflow))[0]
    detail = (
        await engine.client.get(f"/v1/enrollments/{run['id']}", headers=engine.headers)
    ).json()
    elapsed = [datetime.fromisoformat(s["at"]) for s in detail["steps"] if s["step"] == "wait1"]
    # Never before its due time (1 s after the wait began). How soon after is a speed, which
    # bench.workflows_bench measures (lateness p99); a test on a loaded machine cannot.
    assert elapsed[1] - elapsed[0] >= timedelta(seconds=1)
    metrics = (await engine.client.get("/metrics")).text
    assert "leadwire_workflow_timers_fired_total" in metrics


def contact_batches(way: str) -> float:
    return REGISTRY.get_sample_value("leadwire_workflows_contact_batches_total", {"way": way}) or 0


async def test_a_new_contact_is_written_in_one_statement_and_its_redelivery_once(
    engine: Engine,
) -> None:
    """The one statement of a new contact's events (`contacts_at_once`) enrolls it; the same
    events delivered again fail that statement's strict claim and go the careful way, which
    finds them handled: still one run."""
    workflow = await engine.workflow(DRIP)
    contact_id, created = engine.driver.created()
    key = topics.contact_key(engine.driver.workspace, contact_id)
    fast, retried = contact_batches("one_statement"), contact_batches("retried")
    await engine.driver.bus.publish(topics.CONTACTS, key, created)

    async def enrolled() -> bool:
        return len(await engine.runs(workflow)) == 1

    async def in_one_statement() -> bool:  # counted once its session closed, after the commit
        return contact_batches("one_statement") == fast + 1

    await eventually(enrolled, timeout=20)
    await eventually(in_one_statement, timeout=5)
    await engine.driver.bus.publish(topics.CONTACTS, key, created)

    async def refused() -> bool:
        return contact_batches("retried") == retried + 1

    await eventually(refused, timeout=20)
    await asyncio.sleep(0.5)  # the careful way's commit, had it enrolled again
    assert [r["contact_id"] for r in await engine.runs(workflow)] == [contact_id]


async def test_refusals_fail_the_step_and_malformed_events_go_to_the_dlq(engine: Engine) -> None:
    workflow = await engine.workflow(
        {
            "name": "Mail",
            "trigger": {"type": "contact_created"},
            "steps": [
                {"id": "m", "type": "send_email", "subject": "s", "body": "b", "next": "w"},
                {"id": "w", "type": "wait", "duration": {"hours": 1}},
            ],
        }
    )
    contact = await engine.driver.contact()

    async def requested() -> bool:
        return len(engine.driver.of("notification.requested")) == 1

    await eventually(requested, timeout=60)
    request = engine.driver.of("notification.requested")[0]
    failed = NotificationFailed(
        notification_id="n1",
        idempotency_key=request.data["idempotency_key"],
        contact_id=contact,
        channel="email",
        kind="email",
        reason="bounced",
    )
    await engine.driver.publish(topics.NOTIFICATIONS, failed, contact)

    async def run_failed() -> bool:
        runs = await engine.runs(workflow)
        return bool(runs) and runs[0]["status"] == "failed"

    await eventually(run_failed, timeout=60)
    bad = Envelope(
        source="/t",
        type="contact.created",
        data={"contact": {}},
        workspace=engine.driver.workspace,
        correlationid="c",
    )
    await engine.driver.bus.publish(topics.CONTACTS, f"{engine.driver.workspace}:x", bad)

    async def parked() -> bool:
        return any(
            Envelope.from_bytes(r.value).id == bad.id
            for r in await engine.driver.bus.dead_letters(topics.CONTACTS)
        )

    await eventually(parked, timeout=60)


async def test_two_claimers_share_due_timers_and_fire_each_once(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    clock = FakeClock(datetime.now(UTC))
    async with started(kafka_bootstrap, postgres_url, clock, timer_loop=False) as engine:
        workflow = await engine.workflow(
            {
                "name": "Wait",
                "trigger": {"type": "manual"},
                "steps": [
                    {"id": "w", "type": "wait", "duration": {"minutes": 5}, "next": "t"},
                    {"id": "t", "type": "add_tag", "tag": "after"},
                ],
            }
        )
        await engine.driver.contacts(300)

        async def projected() -> bool:
            ctx = engine.app.state.ctx
            async with ctx.sessions() as session:
                from sqlalchemy import text

                count = await session.scalar(
                    text("SELECT count(*) FROM contacts WHERE workspace = :w"),
                    {"w": engine.driver.workspace},
                )
            return bool(count == 300)

        await eventually(projected, timeout=60)
        # Enroll every known contact by hand: 300 runs waiting five minutes.
        ctx = engine.app.state.ctx
        async with ctx.sessions() as session:
            from sqlalchemy import text

            ids = list(
                (
                    await session.execute(
                        text("SELECT id FROM contacts WHERE workspace = :w"),
                        {"w": engine.driver.workspace},
                    )
                ).scalars()
            )
        for contact_id in ids:
            response = await engine.client.post(
                f"/v1/workflows/{workflow}/enrollments",
                json={"contact_id": contact_id},
                headers=engine.headers,
            )
            assert response.status_code == 201
        clock.advance(minutes=5)
        fired = await asyncio.gather(
            *(fire_once(ctx, clock, limits_of(ctx.settings), 25) for _ in range(6))
        )
        while sum(fired) < 300 and (
            more := await fire_once(ctx, clock, limits_of(ctx.settings), 25)
        ):
            fired.append(more)
        assert sum(fired) == 300
        stats = (
            await engine.client.get(f"/v1/workflows/{workflow}/stats", headers=engine.headers)
        ).json()
        assert stats["completed"] == 300

        async def tagged() -> bool:
            return len(engine.driver.of("contact.add_tag")) >= 300

        await eventually(tagged, timeout=60)
        assert len({e.id for e in engine.driver.of("contact.add_tag")}) == 300


async def test_a_form_submission_pairs_its_lead_and_contact_on_postgres(engine: Engine) -> None:
    workflow = await engine.workflow(
        {
            "name": "Form",
            "trigger": {"type": "form_submitted", "form_id": "frm_x"},
            "steps": [{"id": "t", "type": "add_tag", "tag": "form"}],
        }
    )
    contact_id, created = engine.driver.created()
    submission = uuid.uuid4().hex
    created.data["submission_id"] = submission
    lead = LeadCaptured(
        submission_id=submission,
        source="form",
        source_id="frm_x",
        dedupe_key=f"email:{contact_id}",
        captured_at=datetime.now(UTC),
    )
    await engine.driver.bus.publish(
        topics.CONTACTS, topics.contact_key(engine.driver.workspace, contact_id), created
    )
    await engine.driver.publish(topics.LEADS, lead, contact_id)

    async def enrolled() -> bool:
        return [r["contact_id"] for r in await engine.runs(workflow)] == [contact_id]

    await eventually(enrolled, timeout=60)


async def test_a_timer_a_consumer_commits_wakes_the_timer_loop_without_a_poll(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    """The loop polls once an hour here: a one-second wait that fires within the test's
    patience was fired because the consumer's commit woke the loop, not by a poll."""
    doors = Doors()
    async with started(kafka_bootstrap, postgres_url, doors=doors, poll_s=3600) as engine:
        workflow = await engine.workflow(
            {
                "name": "Short wait",
                "trigger": {"type": "contact_created"},
                "steps": [
                    {"id": "w", "type": "wait", "duration": {"seconds": 1}, "next": "t"},
                    {"id": "t", "type": "add_tag", "tag": "woken"},
                ],
            }
        )

        async def asleep_until_the_poll() -> bool:
            wakes_at = doors.wakeup.wakes_at
            return wakes_at is not None and wakes_at - doors.clock() > timedelta(minutes=30)

        await eventually(asleep_until_the_poll, timeout=30)
        contact = await engine.driver.contact()

        async def tagged() -> bool:
            return len(engine.driver.of("contact.add_tag")) == 1

        await eventually(tagged, timeout=60)
        tag = engine.driver.of("contact.add_tag")[0].data
        assert (tag["contact_id"], tag["tag"]) == (contact, "woken")
        run = (await engine.runs(workflow))[0]
        assert run["status"] == "completed"
        detail = (
            await engine.client.get(f"/v1/enrollments/{run['id']}", headers=engine.headers)
        ).json()
        waited = [datetime.fromisoformat(s["at"]) for s in detail["steps"] if s["step"] == "w"]
        assert waited[1] - waited[0] >= timedelta(seconds=1)  # and never before it was due
