"""Commands, engagement, scores, merges, owners, tasks, erasure and reports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shared.events import topics
from shared.events.contact_commands import (
    AddTag,
    AddToList,
    AssignOwner,
    CreateTask,
    SetField,
    SetLifecycle,
    SetSubscriptionStatus,
)
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import PageViewed
from shared.events.notifications import NotificationSent
from shared.events.scores import ScoreChanged, ScoreThresholdCrossed
from tests.helpers import token
from tests.service.contacts.conftest import Service, random_email
from tests.service.contacts.test_api import create


def command(service: Service, payload: EventPayload) -> Envelope:
    return Envelope.of(payload, source="/leadwire/workflows", workspace=service.workspace)


async def send(service: Service, payload: EventPayload) -> Envelope:
    envelope = command(service, payload)
    await service.publish(topics.CONTACT_COMMANDS, envelope)
    await service.processed("commands", envelope)
    return envelope


async def read(service: Service, contact_id: str) -> dict[str, Any]:
    response = await service.client.get(f"/v1/contacts/{contact_id}", headers=service.headers)
    body: dict[str, Any] = response.json()
    return body


class TestCommands:
    async def test_valid_commands_change_the_contact(self, service: Service) -> None:
        contact = await create(service, email=random_email(), lifecycle_stage="lead")
        cid = contact["id"]
        await send(service, AddTag(contact_id=cid, tag="Hot"))
        await send(service, AddToList(contact_id=cid, list="webinar attendees"))
        await send(service, SetField(contact_id=cid, field="industry", value="Retail"))
        await send(service, SetField(contact_id=cid, field="job_title", value="CTO"))
        await send(service, SetLifecycle(contact_id=cid, stage="mql"))
        await send(service, SetSubscriptionStatus(contact_id=cid, status="unsubscribed"))
        due = date(2026, 3, 5)
        await send(service, CreateTask(contact_id=cid, title="Call back", due_date=due))
        after = await read(service, cid)
        assert after["tags"] == ["hot"]
        assert after["lists"] == ["webinar-attendees"]
        assert after["custom_fields"]["industry"] == "Retail"
        assert after["job_title"] == "CTO"
        assert after["lifecycle_stage"] == "mql"
        assert after["subscription_status"] == "unsubscribed"
        tasks = await service.client.get(
            "/v1/tasks", params={"contact_id": cid}, headers=service.headers
        )
        assert [t["title"] for t in tasks.json()] == ["Call back"]
        assert await service.bus.dead_letters(topics.CONTACT_COMMANDS) == []

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            (SetLifecycle(contact_id="{id}", stage="churned"), "churn_reason"),
            (SetField(contact_id="{id}", field="subscription_end_date", value="x"), "not_a_date"),
            (SetSubscriptionStatus(contact_id="{id}", status="maybe"), "subscription_status"),
            (AddTag(contact_id="no-such-contact", tag="x"), "not found"),
            (AssignOwner(contact_id="{id}"), "give an owner or a team"),
        ],
    )
    async def test_an_invalid_command_ends_on_the_dlq_with_its_reason(
        self, service: Service, payload: Any, reason: str
    ) -> None:
        contact = await create(service, email=random_email())
        if payload.contact_id == "{id}":
            payload = payload.model_copy(update={"contact_id": contact["id"]})
        envelope = command(service, payload)
        await service.publish(topics.CONTACT_COMMANDS, envelope)
        await service.processed("commands", envelope)
        dead = await service.bus.dead_letters(topics.CONTACT_COMMANDS)
        assert [Envelope.from_bytes(r.value).id for r in dead] == [envelope.id]
        assert reason in dead[0].headers["leadwire-error"]
        # The sender hears why, on the contacts topic, with the refused command's id.
        rejected = [
            e
            for e in (Envelope.from_bytes(r.value) for r in service.bus.records(topics.CONTACTS))
            if e.type == "contact.command_rejected"
        ]
        assert {e.data["command_id"] for e in rejected} == {envelope.id}
        assert reason in rejected[0].data["reason"]
        assert len({e.id for e in rejected}) == 1

    async def test_a_poll_of_commands_applies_in_order_and_dead_letters_only_the_bad_one(
        self, service: Service
    ) -> None:
        team_id, owners = await TestOwners().team_with_owners(service, "round_robin", [1, 1])
        people = [(await create(service, email=random_email()))["id"] for _ in range(4)]
        payloads: list[EventPayload] = [
            AssignOwner(contact_id=people[0], team_id=team_id),
            AssignOwner(contact_id=people[1], team_id=team_id),
            AddTag(contact_id=people[1], tag="hot"),
            AssignOwner(contact_id=people[2]),  # neither owner nor team: refused
            AssignOwner(contact_id=people[2], team_id=team_id),
            AssignOwner(contact_id=people[3], owner_id=owners[0]),
            AssignOwner(contact_id=people[0], team_id=team_id),
        ]
        envelopes = [command(service, p) for p in payloads]
        for envelope in envelopes:  # published back to back: polled together
            await service.publish(topics.CONTACT_COMMANDS, envelope, f"k:{people[0]}")
        await service.processed("commands", envelopes[-1])
        owned = [(await read(service, cid))["owner_id"] for cid in people]
        assert owned == [owners[1], owners[1], owners[0], owners[0]]
        assert (await read(service, people[1]))["tags"] == ["hot"]
        dead = await service.bus.dead_letters(topics.CONTACT_COMMANDS)
        assert [Envelope.from_bytes(r.value).id for r in dead] == [envelopes[3].id]
        # In order per contact (the in-process bus lists records partition by partition).
        per_contact: dict[str, list[tuple[str | None, str]]] = {}
        for a in await service.payloads("contact.owner_assigned"):
            per_contact.setdefault(a.contact_id, []).append((a.previous_owner_id, a.owner_id))  # type: ignore[attr-defined]
        assert per_contact == {
            people[0]: [(None, owners[0]), (owners[0], owners[1])],
            people[1]: [(None, owners[1])],
            people[2]: [(None, owners[0])],
            people[3]: [(None, owners[0])],
        }

    async def test_an_unknown_command_type_is_dead_lettered(self, service: Service) -> None:
        envelope = Envelope(
            source="/x", type="contact.explode", workspace=service.workspace, correlationid="c"
        )
        await service.publish(topics.CONTACT_COMMANDS, envelope)
        await service.processed("commands", envelope)
        dead = await service.bus.dead_letters(topics.CONTACT_COMMANDS)
        assert "unknown contact command" in dead[0].headers["leadwire-error"]


class TestEngagementAndScores:
    async def test_engagement_goes_on_the_timeline_and_moves_last_interaction(
        self, service: Service
    ) -> None:
        contact = await create(service, email=random_email())
        when = datetime(2026, 2, 27, 9, 30, tzinfo=UTC)
        envelope = Envelope.of(
            PageViewed(
                engagement_id="e1", email=contact["email"].upper(), occurred_at=when, url="/p"
            ),
            source="/leadwire/ingest",
            workspace=service.workspace,
        )
        await service.publish(topics.ENGAGEMENT, envelope)
        await service.processed("engagement", envelope)
        after = await read(service, contact["id"])
        assert datetime.fromisoformat(after["last_interaction_at"]) == when
        timeline = await service.client.get(
            f"/v1/contacts/{contact['id']}/timeline", headers=service.headers
        )
        assert "page.viewed" in [i["kind"] for i in timeline.json()["items"]]

    async def test_a_score_event_sets_the_score_on_the_record(self, service: Service) -> None:
        contact = await create(service, email=random_email())
        for group, after in (("overall", 42.0), ("product_a", 7.0)):
            envelope = Envelope.of(
                ScoreChanged(
                    contact_id=contact["id"], group=group, before=0, after=after, cause="demo"
                ),
                source="/leadwire/scoring",
                workspace=service.workspace,
            )
            await service.publish(topics.SCORES, envelope)
            await service.processed("scores", envelope)
        # The record shows the `overall` group; other groups leave it alone.
        assert (await read(service, contact["id"]))["score"] == 42

    async def test_polls_of_scores_and_notifications_reach_records_and_timelines(
        self, service: Service
    ) -> None:
        a = await create(service, email=random_email())
        b = await create(service, email=random_email())
        merged = await create(service, email=random_email())
        await service.client.post(
            "/v1/contacts/merge",
            json={"survivor_id": b["id"], "merged_id": merged["id"]},
            headers=service.headers,
        )

        def scored(contact_id: str, group: str, after: float) -> Envelope:
            payload = ScoreChanged(
                contact_id=contact_id, group=group, before=0, after=after, cause="t"
            )
            return Envelope.of(payload, source="/leadwire/scoring", workspace=service.workspace)

        crossed = ScoreThresholdCrossed(
            contact_id=merged["id"],
            group="overall",
            threshold="sql",
            value=50,
            score=60,
            direction="up",
            crossed_at=service.clock(),
        )
        scores = [
            scored(a["id"], "overall", 10.0),
            scored(merged["id"], "overall", 60.0),  # applies to its survivor
            scored("no-such-contact", "overall", 5.0),
            scored(a["id"], "product_a", 99.0),
            scored(a["id"], "overall", 20.0),
            Envelope.of(crossed, source="/leadwire/scoring", workspace=service.workspace),
        ]
        sent = [
            Envelope.of(
                NotificationSent(
                    notification_id=f"n{i}",
                    idempotency_key=f"k{i}",
                    contact_id=contact_id,
                    channel="slack",
                    kind="slack",
                ),
                source="/leadwire/notifier",
                workspace=service.workspace,
            )
            for i, contact_id in enumerate((a["id"], merged["id"], "no-such-contact"))
        ]
        for envelope in scores:  # back to back: polled together
            await service.publish(topics.SCORES, envelope, "k")
        for envelope in sent:
            await service.publish(topics.NOTIFICATIONS, envelope, "k")
        await service.processed("scores", scores[-1])
        await service.processed("notifications", sent[-1])
        assert (
            (await read(service, a["id"]))["score"],
            (await read(service, b["id"]))["score"],
        ) == (
            20,
            60,
        )

        async def kinds(contact_id: str) -> list[str]:
            timeline = await service.client.get(
                f"/v1/contacts/{contact_id}/timeline", headers=service.headers
            )
            return [i["kind"] for i in timeline.json()["items"]]

        assert (await kinds(a["id"])).count("notification.sent") == 1
        survivor = await kinds(b["id"])
        assert (survivor.count("notification.sent"), survivor.count(crossed.event_type)) == (1, 1)
        assert await service.bus.dead_letters(topics.SCORES) == []
        assert await service.bus.dead_letters(topics.NOTIFICATIONS) == []


class TestMerge:
    async def test_merge_moves_everything_and_redirects(self, service: Service) -> None:
        old = await create(
            service,
            email=random_email(),
            first_name="Ada",
            company="Old",
            tags=["a"],
            lists=["newsletter"],
        )
        service.clock.advance(minutes=1)
        new = await create(service, email=random_email(), company="New", tags=["b"])
        await service.client.post(
            f"/v1/contacts/{old['id']}/notes", json={"text": "met"}, headers=service.headers
        )
        task = await service.client.post(
            "/v1/tasks", json={"contact_id": old["id"], "title": "t"}, headers=service.headers
        )
        merged = await service.client.post(
            "/v1/contacts/merge",
            json={
                "survivor_id": new["id"],
                "merged_id": old["id"],
                "choices": {"email": "merged"},
            },
            headers=service.headers,
        )
        assert merged.status_code == 200, merged.text
        survivor = merged.json()
        assert survivor["email"] == old["email"], "explicit choice"
        assert survivor["company"] == "New", "most recently updated non-empty wins"
        assert survivor["first_name"] == "Ada", "empty never wins"
        assert survivor["tags"] == ["a", "b"]
        assert survivor["lists"] == ["newsletter"]
        redirect = await service.client.get(
            f"/v1/contacts/{old['id']}", headers=service.headers, follow_redirects=False
        )
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"/v1/contacts/{new['id']}"
        timeline = await service.client.get(
            f"/v1/contacts/{new['id']}/timeline", headers=service.headers
        )
        kinds = [i["kind"] for i in timeline.json()["items"]]
        assert {"note", "task.created", "contact.merged"} <= set(kinds)
        tasks = await service.client.get(
            "/v1/tasks", params={"contact_id": new["id"]}, headers=service.headers
        )
        assert [t["id"] for t in tasks.json()] == [task.json()["id"]]
        event = (await service.payloads("contact.merged"))[0]
        assert event.survivor_id == new["id"]  # type: ignore[attr-defined]
        assert event.merged_id == old["id"]  # type: ignore[attr-defined]
        assert event.chosen["email"] == old["email"]  # type: ignore[attr-defined]
        listing = await service.client.get("/v1/contacts", headers=service.headers)
        assert [c["id"] for c in listing.json()["items"]] == [new["id"]]

    async def test_a_command_for_a_merged_id_applies_to_the_survivor(
        self, service: Service
    ) -> None:
        a = await create(service, email=random_email())
        b = await create(service, email=random_email())
        await service.client.post(
            "/v1/contacts/merge",
            json={"survivor_id": a["id"], "merged_id": b["id"]},
            headers=service.headers,
        )
        await send(service, AddTag(contact_id=b["id"], tag="late"))
        assert (await read(service, a["id"]))["tags"] == ["late"]

    async def test_duplicates_are_listed_with_a_score_and_not_merged(
        self, service: Service
    ) -> None:
        a = await create(
            service, email="jon.smith@acme.io", first_name="Jon", last_name="Smith", company="Acme"
        )
        b = await create(
            service, email="jsmith@gmail.com", first_name="John", last_name="Smith", company="ACME"
        )
        c = await create(service, email="j.o.n.smith+news@acme.io")
        await create(service, email=random_email(), first_name="Zed", company="Other")
        found = (
            await service.client.get("/v1/contacts/duplicates", headers=service.headers)
        ).json()
        pairs = {frozenset(d["contact_ids"]): d for d in found}
        assert frozenset((a["id"], b["id"])) in pairs
        assert pairs[frozenset((a["id"], b["id"]))]["reasons"] == ["similar_name_same_company"]
        assert frozenset((a["id"], c["id"])) in pairs
        assert all(d["score"] >= 85 for d in found)
        assert (await read(service, b["id"]))["id"] == b["id"]


class TestOwners:
    async def team_with_owners(
        self, service: Service, rule: str, weights: list[int]
    ) -> tuple[str, list[str]]:
        team = await service.client.post(
            "/v1/teams", json={"name": f"t-{rule}", "rule": rule}, headers=service.headers
        )
        owners = []
        for i, weight in enumerate(weights):
            owner = await service.client.post(
                "/v1/owners",
                json={"name": f"o{i}", "team_id": team.json()["id"], "weight": weight},
                headers=service.headers,
            )
            owners.append(owner.json()["id"])
        return team.json()["id"], owners

    async def assign_many(self, service: Service, team_id: str, n: int) -> list[str]:
        chosen = []
        for _ in range(n):
            contact = await create(service, email=random_email())
            response = await service.client.post(
                f"/v1/contacts/{contact['id']}/owner",
                json={"team_id": team_id},
                headers=service.headers,
            )
            chosen.append(response.json()["owner_id"])
        return chosen

    async def test_round_robin_is_fair_and_skips_inactive_owners(self, service: Service) -> None:
        team_id, owners = await self.team_with_owners(service, "round_robin", [1, 1, 1])
        first = await self.assign_many(service, team_id, 6)
        assert first == owners + owners
        await service.client.patch(
            f"/v1/owners/{owners[1]}", json={"active": False}, headers=service.headers
        )
        second = await self.assign_many(service, team_id, 4)
        assert second == [owners[0], owners[2], owners[0], owners[2]]
        assigned = await service.payloads("contact.owner_assigned")
        assert len(assigned) == 10
        assert {a.rule for a in assigned} == {"round_robin"}  # type: ignore[attr-defined]

    async def test_weighted_rotation_gives_each_owner_its_share(self, service: Service) -> None:
        team_id, owners = await self.team_with_owners(service, "weighted", [3, 1])
        chosen = await self.assign_many(service, team_id, 8)
        assert chosen.count(owners[0]) == 6
        assert chosen.count(owners[1]) == 2
        assert chosen[:4].count(owners[1]) == 1, "smooth: never three in a row for the light one"


class TestAssignmentAtCapture:
    async def test_new_leads_are_captured_with_an_owner_named_in_contact_created(
        self, service: Service
    ) -> None:
        team_id, owners = await TestOwners().team_with_owners(service, "round_robin", [1, 1])
        rule = await service.client.put(
            "/v1/capture-assignment", json={"team_id": team_id}, headers=service.headers
        )
        assert rule.status_code == 200, rule.text
        assert (rule.json()["team_id"], rule.json()["rule"]) == (team_id, "round_robin")
        got = await service.client.get("/v1/capture-assignment", headers=service.headers)
        assert got.json()["team_name"] == "t-round_robin"
        leads = [await service.captured(email=random_email()) for _ in range(3)]
        assert [c["owner_id"] for c in leads] == [owners[0], owners[1], owners[0]]
        names = {owners[0]: "o0", owners[1]: "o1"}
        expected = {c["id"]: (c["owner_id"], names[c["owner_id"]]) for c in leads}
        # (the in-process bus lists records partition by partition, not in publishing order)
        created = await service.payloads("contact.created")
        assert {
            c.contact.id: (c.contact.owner_id, c.owner_name)  # type: ignore[attr-defined]
            for c in created
        } == expected
        assigned = await service.payloads("contact.owner_assigned")
        assert {
            a.contact_id: (a.owner_id, a.owner_name)  # type: ignore[attr-defined]
            for a in assigned
        } == expected
        assert {a.rule for a in assigned} == {"round_robin"}  # type: ignore[attr-defined]
        # The API's rotation is the same one: the next turn is the second owner's.
        assert await TestOwners().assign_many(service, team_id, 1) == [owners[1]]

        cleared = await service.client.delete("/v1/capture-assignment", headers=service.headers)
        assert cleared.status_code == 204
        assert (await service.captured(email=random_email()))["owner_id"] is None
        gone = await service.client.get("/v1/capture-assignment", headers=service.headers)
        assert gone.status_code == 404

    async def test_bad_rules_are_refused_with_paths_and_scopes_are_checked(
        self, service: Service
    ) -> None:
        unknown = await service.client.put(
            "/v1/capture-assignment", json={"team_id": "nope"}, headers=service.headers
        )
        assert unknown.status_code == 422
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert [(e["field"], e["code"]) for e in unknown.json()["errors"]] == [
            ("team_id", "unknown_team")
        ]
        shaped = await service.client.put(
            "/v1/capture-assignment", json={"team": "x"}, headers=service.headers
        )
        assert shaped.status_code == 422
        assert {e["field"] for e in shaped.json()["errors"]} >= {"team_id", "team"}
        reader = token(service.workspace, "contacts:read")
        team_id, _ = await TestOwners().team_with_owners(service, "weighted", [1])
        refused = await service.client.put(
            "/v1/capture-assignment", json={"team_id": team_id}, headers=reader
        )
        assert refused.status_code == 403
        assert (
            await service.client.delete("/v1/capture-assignment", headers=reader)
        ).status_code == 403
        foreign = token(f"other-{service.workspace}", "contacts:read", "contacts:write")
        elsewhere = await service.client.put(
            "/v1/capture-assignment", json={"team_id": team_id}, headers=foreign
        )
        assert elsewhere.status_code == 422, "another workspace's team is unknown here"


class TestTasks:
    async def test_overdue_tasks_by_assignee_and_completion(self, service: Service) -> None:
        owner = await service.client.post(
            "/v1/owners", json={"name": "Sam"}, headers=service.headers
        )
        contact = await create(service, email=random_email())
        today = service.clock().date()
        for title, due in (("late", today - timedelta(days=1)), ("later", today)):
            await service.client.post(
                "/v1/tasks",
                json={
                    "contact_id": contact["id"],
                    "title": title,
                    "due_date": due.isoformat(),
                    "assignee_id": owner.json()["id"],
                },
                headers=service.headers,
            )
        overdue = await service.client.get(
            "/v1/tasks",
            params={"assignee": owner.json()["id"], "overdue": "true"},
            headers=service.headers,
        )
        assert [t["title"] for t in overdue.json()] == ["late"]
        done = await service.client.patch(
            f"/v1/tasks/{overdue.json()[0]['id']}",
            json={"status": "done"},
            headers=service.headers,
        )
        assert done.json()["status"] == "done"
        assert len(await service.payloads("task.created")) == 2
        assert len(await service.payloads("task.completed")) == 1


class TestErasure:
    async def test_erase_leaves_no_personal_data_in_the_services_tables(
        self, service: Service
    ) -> None:
        email = random_email("erase")
        captured = await service.captured(email=email, first_name="Eraseme", tags=["t"])
        other = await create(service, email=random_email())
        await service.client.post(
            "/v1/contacts/merge",
            json={"survivor_id": captured["id"], "merged_id": other["id"]},
            headers=service.headers,
        )
        await service.client.post(
            f"/v1/contacts/{captured['id']}/notes",
            json={"text": "secret"},
            headers=service.headers,
        )
        await service.events()  # the relay has sent what it had
        response = await service.client.delete(
            f"/v1/contacts/{captured['id']}", headers=service.headers
        )
        assert response.status_code == 204
        engine = service.app.state.ctx.engine
        async with engine.connect() as conn:
            tables = (
                await conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            ).scalars()
            for table in tables:
                if table in ("alembic_version", "inbox"):
                    continue
                rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
                dump = repr(rows)
                for secret in (email, "Eraseme", "secret", captured["id"], other["email"]):
                    if table == "outbox" and secret == captured["id"]:
                        continue  # the tombstone names the erased id, nothing else
                    assert secret not in dump, (table, secret)
        deleted = await service.payloads("contact.deleted")
        assert deleted[0].contact_id == captured["id"]  # type: ignore[attr-defined]
        gone = await service.client.get(f"/v1/contacts/{captured['id']}", headers=service.headers)
        assert gone.status_code == 404

    async def test_export_returns_everything_held_on_the_person(self, service: Service) -> None:
        contact = await service.captured(email=random_email(), tags=["x"])
        await service.client.post(
            f"/v1/contacts/{contact['id']}/notes", json={"text": "hi"}, headers=service.headers
        )
        export = (
            await service.client.get(
                f"/v1/contacts/{contact['id']}/export", headers=service.headers
            )
        ).json()
        assert export["contact"]["email"] == contact["email"]
        assert {i["kind"] for i in export["timeline"]} == {"lead.captured", "note"}
        assert export["lifecycle_history"][0]["to"] == "lead"
        assert export["services"] == {}
        assert sorted(export["not_exported"]) == ["ingest", "notifier", "scoring", "workflows"]

    async def test_export_answers_503_while_a_service_cannot_answer(self, service: Service) -> None:
        contact = await service.captured(email=random_email())

        def ingest_down(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        service.app.state.export_transport = httpx.MockTransport(ingest_down)
        response = await service.client.get(
            f"/v1/contacts/{contact['id']}/export", headers=service.headers
        )
        assert response.status_code == 503
        assert response.json()["code"] == "dependency_unavailable"
        assert int(response.headers["retry-after"]) > 0


class TestReports:
    async def test_churn_rate_is_churned_customers_over_customers_at_start(
        self, service: Service
    ) -> None:
        customers = [
            await create(service, email=random_email(), lifecycle_stage="customer")
            for _ in range(4)
        ]
        start = service.clock()
        service.clock.advance(days=3)
        await service.client.patch(
            f"/v1/contacts/{customers[0]['id']}",
            json={"lifecycle_stage": "churned", "churn_reason": "budget"},
            headers=service.headers,
        )
        service.clock.advance(days=1)
        report = await service.client.get(
            "/v1/reports/churn",
            params={"start": start.isoformat(), "end": service.clock().isoformat()},
            headers=service.headers,
        )
        body = report.json()
        assert body["customers_at_start"] == 4
        assert body["churned"] == 1
        assert body["churn_rate"] == 25.0
        assert body["reasons"] == {"budget": 1}

    async def test_funnel_counts_stages_and_conversions(self, service: Service) -> None:
        start = service.clock() - timedelta(seconds=1)
        leads = [await create(service, email=random_email()) for _ in range(4)]
        for c in leads[:2]:
            await service.client.patch(
                f"/v1/contacts/{c['id']}", json={"lifecycle_stage": "mql"}, headers=service.headers
            )
        service.clock.advance(hours=1)
        funnel = (
            await service.client.get(
                "/v1/reports/funnel",
                params={"start": start.isoformat(), "end": service.clock().isoformat()},
                headers=service.headers,
            )
        ).json()
        stages = {s["stage"]: s for s in funnel["stages"]}
        assert stages["lead"]["contacts"] == 2
        assert stages["mql"]["contacts"] == 2
        assert stages["lead"]["entered_in_period"] == 4
        lead_to_mql = next(c for c in funnel["conversions"] if c["from"] == "lead")
        assert lead_to_mql["rate"] == 50.0

    async def test_data_quality_counts_and_samples(self, service: Service) -> None:
        stale = await create(service, email=random_email())
        service.clock.advance(days=120)
        await create(service, email=random_email(), subscription_status="unsubscribed")
        report = (
            await service.client.get(
                "/v1/data-quality", params={"stale_days": 90}, headers=service.headers
            )
        ).json()
        assert report["stale"]["count"] == 1
        assert report["stale"]["sample"] == [stale["id"]]
        assert report["unsubscribed"]["count"] == 1
        assert report["missing_required"]["email_or_phone"]["count"] == 0


class TestIsolationOnTheBus:
    async def test_a_command_from_another_workspace_cannot_touch_the_contact(
        self, service: Service
    ) -> None:
        contact = await create(service, email=random_email())
        foreign = Envelope.of(
            AddTag(contact_id=contact["id"], tag="pwned"),
            source="/leadwire/workflows",
            workspace="ws-intruder",
        )
        await service.publish(topics.CONTACT_COMMANDS, foreign)
        await service.processed("commands", foreign)
        assert (await read(service, contact["id"]))["tags"] == []
        dead = await service.bus.dead_letters(topics.CONTACT_COMMANDS)
        assert "not found" in dead[0].headers["leadwire-error"]

    async def test_engagement_in_another_workspace_does_not_move_our_contact(
        self, service: Service
    ) -> None:
        contact = await create(service, email=random_email())
        envelope = Envelope.of(
            PageViewed(engagement_id="e9", email=contact["email"], occurred_at=datetime.now(UTC)),
            source="/leadwire/ingest",
            workspace="ws-intruder",
        )
        await service.publish(topics.ENGAGEMENT, envelope)
        await service.processed("engagement", envelope)
        assert (await read(service, contact["id"]))["last_interaction_at"] is None
