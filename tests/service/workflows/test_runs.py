"""Runs through the API and the bus: steps, versions, re-enrollment, goals, exclusion, dry
runs, refusals coming back as failed steps, retries, merges, erasure and workspaces."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import yaml

from services.workflows.consumers import refresh_run_gauges
from services.workflows.engine.domain import effect_id
from shared.events import topics
from shared.events.contact_commands import parse_command
from shared.events.contacts import (
    ContactCommandRejected,
    ContactCreated,
    ContactDeleted,
    ContactMerged,
    SegmentEntered,
)
from shared.events.envelope import Envelope
from shared.events.ingest import EmailOpened
from shared.events.notifications import NotificationFailed, NotificationRequested, NotificationSent
from shared.events.workflows import RUN_EVENT_TYPES
from tests.helpers import token
from tests.service.workflows.conftest import Service

DRIP: dict[str, Any] = {
    "name": "Welcome drip",
    "trigger": {"type": "contact_created"},
    "steps": [
        {
            "id": "hello",
            "type": "send_email",
            "subject": "Welcome {{ contact.first_name | default('friend') }}",
            "body": "Hi",
            "next": "wait",
        },
        {"id": "wait", "type": "wait", "duration": {"days": 2}, "next": "tip"},
        {"id": "tip", "type": "add_tag", "tag": "drip-2"},
    ],
}


def manual(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "Manual", "trigger": {"type": "manual"}, "steps": steps, **extra}


async def enroll(service: Service, workflow_id: str, contact_id: str) -> dict[str, Any]:
    response = await service.client.post(
        f"/v1/workflows/{workflow_id}/enrollments",
        json={"contact_id": contact_id},
        headers=service.headers,
    )
    assert response.status_code == 201, response.text
    return await service.run(response.json()["enrolled"][0])


class TestDefinitionsApi:
    async def test_yaml_is_accepted_and_invalid_documents_get_422_with_paths(
        self, service: Service
    ) -> None:
        created = await service.client.post(
            "/v1/workflows",
            content=yaml.safe_dump(DRIP),
            headers=service.headers | {"content-type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1
        bad = await service.client.post(
            "/v1/workflows",
            json=manual(
                [
                    {"id": "a", "type": "add_tag", "tag": "x", "next": "ghost"},
                    {"id": "b", "type": "end"},
                ]
            ),
            headers=service.headers,
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert {e["field"] for e in bad.json()["errors"]} == {"steps[0].next"}
        garbage = await service.client.post(
            "/v1/workflows", content=b"{nope", headers=service.headers
        )
        assert garbage.status_code == 422

    async def test_a_workspace_sees_only_its_workflows_and_runs(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        other = token(f"ws-{uuid.uuid4().hex[:8]}", "workflows:read", "workflows:write")
        assert (await service.client.get(f"/v1/workflows/{w}", headers=other)).status_code == 404
        assert (await service.client.get("/v1/workflows", headers=other)).json()["items"] == []
        # A contact of another workspace does not enter this workspace's workflow.
        await service.create_contact(workspace=f"ws-{uuid.uuid4().hex[:8]}")
        assert await service.runs(w) == []
        a = await service.create_contact()
        run = (await service.runs(w))[0]
        assert (
            await service.client.get(f"/v1/enrollments/{run['id']}", headers=other)
        ).status_code == 404
        assert run["contact_id"] == a

    async def test_scopes_are_enforced(self, service: Service) -> None:
        reader = token(service.workspace, "workflows:read")
        response = await service.client.post("/v1/workflows", json=DRIP, headers=reader)
        assert response.status_code == 403


class TestRunHistoryAndEffects:
    async def test_a_drip_runs_to_the_end_with_history_events_and_keys(
        self, service: Service
    ) -> None:
        w = await service.workflow(DRIP)
        a = await service.create_contact(first_name=None)
        run = (await service.runs(w))[0]
        assert (run["status"], run["step"]) == ("waiting", "wait")
        requests = await service.published(topics.NOTIFICATION_REQUESTS)
        assert len(requests) == 1
        request = requests[0]
        assert request.data["content"]["subject"] == "Welcome friend"
        assert request.id == effect_id(request.data["idempotency_key"])
        assert request.data["idempotency_key"].startswith(f"workflow:{run['id']}:hello:")
        await service.advance(days=2)
        done = await service.run(run["id"])
        assert done["status"] == "completed"
        assert [(s["step"], s["outcome"]) for s in done["steps"]] == [
            ("hello", "done"),
            ("wait", "waiting"),
            ("wait", "elapsed"),
            ("tip", "done"),
        ]
        run_events = await service.published(topics.WORKFLOW_RUNS)
        for event in run_events:  # built as plain JSON on the hot path: still the contract
            RUN_EVENT_TYPES[event.type].model_validate(event.data)
        progress = [e.type for e in run_events]
        assert progress[0] == "workflow.enrolled"
        assert progress[-1] == "workflow.ended"
        assert "workflow.waiting" in progress
        stats = (
            await service.client.get(f"/v1/workflows/{w}/stats", headers=service.headers)
        ).json()
        assert (stats["enrolled"], stats["completed"], stats["active"]) == (1, 1, 0)
        assert a

    async def test_metrics_count_the_runs_of_each_workflow_by_status(
        self, service: Service
    ) -> None:
        w = await service.workflow(DRIP)
        await service.create_contact()
        await service.create_contact()
        first, _ = await service.runs(w)
        exited = await service.client.post(
            f"/v1/enrollments/{first['id']}/exit", headers=service.headers
        )
        assert exited.status_code == 200, exited.text
        await refresh_run_gauges(service.app.state.ctx)
        metrics = (await service.client.get("/metrics")).text
        counted = (
            f'leadwire_workflow_runs{{status="%s",workflow="{w}",workspace="{service.workspace}"}}'
        )
        assert counted % "waiting" + " 1.0" in metrics
        assert counted % "exited" + " 1.0" in metrics

    async def test_every_contact_command_action(self, service: Service) -> None:
        w = await service.workflow(
            manual(
                [
                    {"id": "a", "type": "remove_tag", "tag": "cold", "next": "b"},
                    {
                        "id": "b",
                        "type": "set_field",
                        "field": "custom_fields.greeting",
                        "value": "Hi {{ contact.first_name }}",
                        "next": "c",
                    },
                    {
                        "id": "c",
                        "type": "set_lifecycle",
                        "stage": "churned",
                        "churn_reason": "budget",
                        "next": "d",
                    },
                    {"id": "d", "type": "assign_owner", "team_id": "team_sales", "next": "e"},
                    {"id": "e", "type": "add_to_list", "list": "winback", "next": "f"},
                    {"id": "f", "type": "remove_from_list", "list": "newsletter", "next": "g"},
                    {
                        "id": "g",
                        "type": "send_webhook",
                        "channel": "crm-hook",
                        "payload": {"who": "{{ contact.email }}"},
                        "next": "h",
                    },
                    {
                        "id": "h",
                        "type": "send_slack",
                        "channel": "#sales",
                        "text": "{{ contact.first_name }} churned",
                    },
                ]
            )
        )
        a = await service.create_contact()
        await enroll(service, w, a)
        published = await service.commands()
        for command in published:
            parse_command(command)
        for request in await service.published(topics.NOTIFICATION_REQUESTS):
            request.payload(NotificationRequested)
        commands = {c.type: c.data for c in published}
        assert commands["contact.set_field"]["value"] == "Hi Ada"
        assert commands["contact.set_lifecycle"] == {
            "contact_id": a,
            "stage": "churned",
            "churn_reason": "budget",
        }
        assert commands["contact.assign_owner"]["team_id"] == "team_sales"
        assert {
            "contact.remove_tag",
            "contact.add_to_list",
            "contact.remove_from_list",
        } <= commands.keys()
        notes = [e.data for e in await service.published(topics.NOTIFICATION_REQUESTS)]
        assert notes[0]["content"] == {"json": {"who": f"{a}@example.com"}}
        assert notes[1]["content"] == {"text": "Ada churned"}

    async def test_enroll_in_another_workflow(self, service: Service) -> None:
        target = await service.workflow(manual([{"id": "t", "type": "add_tag", "tag": "second"}]))
        first = await service.workflow(
            manual([{"id": "go", "type": "enroll", "workflow_id": target}])
        )
        a = await service.create_contact()
        await enroll(service, first, a)
        assert [r["trigger"] for r in await service.runs(target)] == [f"workflow:{first}"]


class TestWaitsForEvents:
    async def test_an_opened_email_moves_the_run_down_the_event_branch(
        self, service: Service
    ) -> None:
        w = await service.workflow(
            manual(
                [
                    {
                        "id": "w",
                        "type": "wait_for_event",
                        "event": "email.opened",
                        "timeout": {"days": 3},
                        "on_event": "hot",
                        "on_timeout": "cold",
                    },
                    {"id": "hot", "type": "add_tag", "tag": "hot"},
                    {"id": "cold", "type": "add_tag", "tag": "cold"},
                ]
            )
        )
        a, b = await service.create_contact(), await service.create_contact()
        run_a, run_b = await enroll(service, w, a), await enroll(service, w, b)
        opened = EmailOpened(engagement_id="o1", contact_id=a, occurred_at=service.clock())
        await service.publish(topics.ENGAGEMENT, opened, a)
        assert (await service.run(run_a["id"]))["status"] == "completed"
        await service.advance(days=3)
        assert (await service.run(run_b["id"]))["status"] == "completed"
        tags = {
            c.data["contact_id"]: c.data["tag"] for c in await service.commands("contact.add_tag")
        }
        assert tags == {a: "hot", b: "cold"}

    async def test_waiting_until_the_email_was_sent_and_a_failed_send_fails_the_step(
        self, service: Service
    ) -> None:
        w = await service.workflow(
            manual(
                [
                    {
                        "id": "mail",
                        "type": "send_email",
                        "subject": "x",
                        "body": "y",
                        "next": "sent",
                    },
                    {
                        "id": "sent",
                        "type": "wait_for_event",
                        "event": "notification.sent",
                        "timeout": {"hours": 1},
                        "next": "tag",
                    },
                    {"id": "tag", "type": "add_tag", "tag": "mailed"},
                ]
            )
        )
        a, b = await service.create_contact(), await service.create_contact()
        run_a, run_b = await enroll(service, w, a), await enroll(service, w, b)
        keys = {
            e.data["contact_id"]: e.data["idempotency_key"]
            for e in await service.published(topics.NOTIFICATION_REQUESTS)
        }
        sent = NotificationSent(
            notification_id="n1",
            idempotency_key=keys[a],
            contact_id=a,
            channel="email",
            kind="email",
        )
        await service.publish(topics.NOTIFICATIONS, sent, a)
        failed = NotificationFailed(
            notification_id="n2",
            idempotency_key=keys[b],
            contact_id=b,
            channel="email",
            kind="email",
            reason="smtp 550 mailbox unavailable",
        )
        await service.publish(topics.NOTIFICATIONS, failed, b)
        assert (await service.run(run_a["id"]))["status"] == "completed"
        failed_run = await service.run(run_b["id"])
        assert failed_run["status"] == "failed"
        assert "550" in failed_run["error"]
        assert failed_run["steps"][-1]["outcome"] == "failed"
        # Retried over the API, the step runs again with a new attempt key.
        retried = await service.client.post(
            f"/v1/enrollments/{run_b['id']}/retry", headers=service.headers
        )
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "waiting"
        keys_b = [
            e.data["idempotency_key"]
            for e in await service.published(topics.NOTIFICATION_REQUESTS)
            if e.data["contact_id"] == b
        ]
        assert len(keys_b) == 2
        assert keys_b[0] != keys_b[1]


class TestRefusedCommands:
    async def test_a_command_contacts_refuses_fails_the_step_with_its_reason(
        self, service: Service
    ) -> None:
        w = await service.workflow(
            manual(
                [
                    {
                        "id": "life",
                        "type": "set_field",
                        "field": "custom_fields.shoe",
                        "value": "x",
                        "next": "w",
                    },
                    {"id": "w", "type": "wait", "duration": {"days": 1}},
                ]
            )
        )
        a = await service.create_contact()
        run = await enroll(service, w, a)
        command = (await service.commands("contact.set_field"))[0]
        rejected = ContactCommandRejected(
            command_id=command.id,
            command_type=command.type,
            contact_id=a,
            code="validation_failed",
            reason="no custom field shoe",
        )
        await service.publish(topics.CONTACTS, rejected, a)
        failed = await service.run(run["id"])
        assert failed["status"] == "failed"
        assert failed["error"] == "validation_failed: no custom field shoe"
        assert (failed["steps"][-1]["step"], failed["steps"][-1]["outcome"]) == ("life", "failed")
        assert await service.advance(days=1) == 0  # its wait was cancelled


class TestVersions:
    async def test_runs_in_flight_finish_on_their_version(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        a = await service.create_contact()
        edited = {
            **DRIP,
            "steps": [*DRIP["steps"][:2], {"id": "tip", "type": "add_tag", "tag": "drip-v2"}],
        }
        response = await service.client.put(
            f"/v1/workflows/{w}", json=edited, headers=service.headers
        )
        assert response.json()["version"] == 2
        b = await service.create_contact()
        await service.advance(days=2)
        tags = {
            c.data["contact_id"]: c.data["tag"] for c in await service.commands("contact.add_tag")
        }
        assert tags == {a: "drip-2", b: "drip-v2"}
        versions = {r["contact_id"]: r["version"] for r in await service.runs(w)}
        assert versions == {a: 1, b: 2}
        listed = await service.client.get(f"/v1/workflows/{w}/versions", headers=service.headers)
        assert [v["version"] for v in listed.json()["items"]] == [1, 2]

    async def test_disabling_stops_enrollment_but_not_running_runs(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        await service.create_contact()
        await service.client.post(f"/v1/workflows/{w}/disable", headers=service.headers)
        await service.create_contact()
        assert len(await service.runs(w)) == 1
        await service.advance(days=2)
        assert (await service.runs(w))[0]["status"] == "completed"


class TestReenrollment:
    async def test_never_after_days_and_always(self, service: Service) -> None:
        step = [{"id": "t", "type": "add_tag", "tag": "x"}]
        never = await service.workflow(manual(step))
        after = await service.workflow(
            manual(step, reenrollment={"policy": "after_days", "days": 7})
        )
        always = await service.workflow(manual(step, reenrollment={"policy": "always"}))
        a = await service.create_contact()
        for w in (never, after, always):
            await enroll(service, w, a)
        await service.advance(days=1)
        statuses = {}
        for w in (never, after, always):
            response = await service.client.post(
                f"/v1/workflows/{w}/enrollments", json={"contact_id": a}, headers=service.headers
            )
            statuses[w] = response.status_code
        assert statuses == {never: 409, after: 409, always: 201}
        await service.advance(days=7)
        response = await service.client.post(
            f"/v1/workflows/{after}/enrollments", json={"contact_id": a}, headers=service.headers
        )
        assert response.status_code == 201

    async def test_a_contact_in_a_run_is_not_enrolled_twice_even_when_always(
        self, service: Service
    ) -> None:
        w = await service.workflow(
            {
                **DRIP,
                "reenrollment": {"policy": "always"},
                "trigger": {"type": "tag_added", "tag": "go"},
            }
        )
        a = await service.create_contact()
        await service.update_contact(a, tags=["go"])
        await service.update_contact(a, tags=[])
        await service.update_contact(a, tags=["go"])
        assert len(await service.runs(w)) == 1


class TestGoalsAndExclusion:
    async def test_meeting_the_goal_ends_a_waiting_run(self, service: Service) -> None:
        w = await service.workflow(
            {**DRIP, "goal": {"field": "lifecycle_stage", "op": "eq", "value": "customer"}}
        )
        a = await service.create_contact()
        await service.update_contact(a, lifecycle_stage="customer")
        run = (await service.runs(w))[0]
        assert run["status"] == "goal_met"
        await service.advance(days=2)
        assert await service.commands("contact.add_tag") == []

    async def test_the_exclusion_segment_keeps_out_and_takes_out(self, service: Service) -> None:
        w = await service.workflow(
            {
                **DRIP,
                "trigger": {"type": "tag_added", "tag": "go"},
                "exclusion_segment": "seg_customers",
            }
        )
        a, b = await service.create_contact(), await service.create_contact()
        await service.publish(
            topics.CONTACTS,
            SegmentEntered(
                segment_id="seg_customers", segment_name="C", contact_id=a, at=service.clock()
            ),
            a,
        )
        await service.update_contact(a, tags=["go"])
        await service.update_contact(b, tags=["go"])
        runs = await service.runs(w)
        assert [r["contact_id"] for r in runs] == [b]
        await service.publish(
            topics.CONTACTS,
            SegmentEntered(
                segment_id="seg_customers", segment_name="C", contact_id=b, at=service.clock()
            ),
            b,
        )
        assert (await service.run(runs[0]["id"]))["status"] == "exited"


class TestDryRun:
    async def test_returns_the_path_and_changes_nothing(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        a = await service.create_contact()
        before_runs = await service.runs(w)
        before = len(service.bus.records(topics.NOTIFICATION_REQUESTS)) + len(
            service.bus.records(topics.WORKFLOW_RUNS)
        )
        response = await service.client.post(
            f"/v1/workflows/{w}/test", json={"contact_id": a}, headers=service.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "completed"
        assert body["path"][0]["would"]["notification"]["content"]["subject"] == "Welcome Ada"
        inline = await service.client.post(
            f"/v1/workflows/{w}/test",
            json={"contact": {"first_name": "Grace"}},
            headers=service.headers,
        )
        assert (
            inline.json()["path"][0]["would"]["notification"]["content"]["subject"]
            == "Welcome Grace"
        )
        await service.app.state.ctx.relay.publish_pending()
        after = len(service.bus.records(topics.NOTIFICATION_REQUESTS)) + len(
            service.bus.records(topics.WORKFLOW_RUNS)
        )
        assert after == before
        assert await service.runs(w) == before_runs
        assert await service.fire_timers() == 0


class TestMergeAndDelete:
    async def test_a_merge_repoints_runs_to_the_survivor(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        survivor, merged = await service.create_contact(), await service.create_contact()
        snap = service.contacts[survivor]
        await service.publish(
            topics.CONTACTS,
            ContactMerged(survivor_id=survivor, merged_id=merged, chosen={}, contact=snap),
            survivor,
        )
        runs = await service.runs(w)
        assert sorted(r["status"] for r in runs) == ["exited", "waiting"]
        assert {r["contact_id"] for r in runs} == {survivor}
        await service.advance(days=2)
        assert [c.data["contact_id"] for c in await service.commands("contact.add_tag")] == [
            survivor
        ]

    async def test_a_deleted_contact_stops_its_runs_and_is_erased(self, service: Service) -> None:
        w = await service.workflow(DRIP)
        a = await service.create_contact()
        run = (await service.runs(w))[0]
        await service.publish(
            topics.CONTACTS, ContactDeleted(contact_id=a, deleted_at=service.clock()), a
        )
        assert await service.runs(w) == []
        assert (
            await service.client.get(f"/v1/enrollments/{run['id']}", headers=service.headers)
        ).status_code == 404
        assert await service.advance(days=2) == 0
        ended = list(await service.published(topics.WORKFLOW_RUNS, "workflow.ended"))
        assert ended[-1].data["reason"] == "contact_deleted"
        dry = await service.client.post(
            f"/v1/workflows/{w}/test", json={"contact_id": a}, headers=service.headers
        )
        assert dry.status_code == 404

    async def test_an_old_event_replayed_after_the_erasure_brings_nobody_back(
        self, service: Service
    ) -> None:
        w = await service.workflow(DRIP)
        a = await service.create_contact()
        # An event produced before the erasure, never applied here (parked as a dead letter,
        # say), replayed after it.
        old = Envelope.of(
            ContactCreated(contact=service.contacts[a], cause="api"),
            source="/test",
            workspace=service.workspace,
        )
        await service.publish(
            topics.CONTACTS, ContactDeleted(contact_id=a, deleted_at=datetime.now(UTC)), a
        )
        assert await service.runs(w) == []
        await service.deliver(topics.CONTACTS, old, a)
        assert await service.runs(w) == []
        dry = await service.client.post(
            f"/v1/workflows/{w}/test", json={"contact_id": a}, headers=service.headers
        )
        assert dry.status_code == 404  # no projection row came back
        # Events produced after the erasure are new: a new contact is enrolled as ever.
        b = await service.create_contact()
        assert [r["contact_id"] for r in await service.runs(w)] == [b]


async def test_a_malformed_event_goes_to_the_dlq(service: Service) -> None:
    from shared.events.envelope import Envelope

    bad = Envelope(
        source="/t",
        type="contact.created",
        data={"contact": {"id": "x"}},
        workspace=service.workspace,
        correlationid="c",
    )
    await service.bus.publish(topics.CONTACTS, f"{service.workspace}:x", bad)
    from tests.helpers import eventually

    async def parked() -> bool:
        return len(await service.bus.dead_letters(topics.CONTACTS)) == 1

    await eventually(parked, timeout=20)
    record = (await service.bus.dead_letters(topics.CONTACTS))[0]
    assert "validation_failed" in record.headers["leadwire-error"]


class TestExportPerson:
    async def test_answers_the_persons_projection_runs_history_and_effects(
        self, service: Service
    ) -> None:
        # A command leaves an effect row (a notification request does not: its key names
        # its step), so the drip tags first.
        tag: dict[str, Any] = {"id": "greet", "type": "add_tag", "tag": "greeted", "next": "hello"}
        w = await service.workflow({**DRIP, "steps": [tag, *DRIP["steps"]]})
        survivor, merged = await service.create_contact(), await service.create_contact()
        other = await service.create_contact()
        await service.publish(
            topics.CONTACTS,
            ContactMerged(
                survivor_id=survivor,
                merged_id=merged,
                chosen={},
                contact=service.contacts[survivor],
            ),
            survivor,
        )
        reader = token(service.workspace, "contacts:read")
        response = await service.client.post(
            "/v1/exports/person",
            json={"contact_id": survivor, "merged_ids": [merged]},
            headers=reader,
        )
        assert response.status_code == 200, response.text
        part = response.json()
        assert {c["id"] for c in part["contacts"]} == {survivor, merged}
        runs = part["enrollments"]
        assert {r["contact_id"] for r in runs} == {survivor}  # the merged one's run re-pointed
        assert {r["workflow_id"] for r in runs} == {w}
        waiting = next(r for r in runs if r["status"] == "waiting")
        assert [s["step"] for s in waiting["steps"]] == ["greet", "hello", "wait"]
        assert [(e["step"], e["kind"]) for e in part["sent_effects"]] == [
            ("greet", "contact.add_tag")
        ] * 2
        assert [t["step"] for t in part["timers"]] == ["wait"]
        assert other not in response.text

    async def test_needs_the_contacts_read_scope(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/exports/person", json={"contact_id": "c"}, headers=service.headers
        )
        assert response.status_code == 403
