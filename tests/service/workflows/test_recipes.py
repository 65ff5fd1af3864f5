"""Recipes: listed, installed with one call as normal versioned workflows, and they run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

from services.workflows.recipes.domain import RECIPES
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactLifecycleChanged, ContactOwnerAssigned
from shared.events.envelope import Envelope
from shared.events.ingest import EmailOpened
from shared.events.scores import ScoreThresholdCrossed
from shared.ids import uuid7 as new_id
from tests.helpers import token
from tests.service.workflows.conftest import Service, snapshot

TEAM = {"team_id": "team_1"}


async def install(service: Service, name: str, body: Mapping[str, object] | None = None) -> str:
    response = await service.client.post(
        f"/v1/workflows/recipes/{name}", json=body, headers=service.headers
    )
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


class TestRecipesApi:
    async def test_every_recipe_is_listed_with_its_parameters(self, service: Service) -> None:
        response = await service.client.get("/v1/workflows/recipes", headers=service.headers)
        assert response.status_code == 200
        items = {r["name"]: r for r in response.json()["items"]}
        assert set(items) == set(RECIPES)
        assert "team_id" in items["new-lead-alert"]["parameters"]["required"]

    async def test_every_recipe_installs_enabled_and_is_editable(self, service: Service) -> None:
        for name in RECIPES:
            workflow_id = await install(service, name, TEAM if name == "new-lead-alert" else {})
            got = (
                await service.client.get(f"/v1/workflows/{workflow_id}", headers=service.headers)
            ).json()
            assert got["enabled"] is True
            assert got["version"] == 1
            document = got["document"] | {"name": got["document"]["name"] + " (ours)"}
            edited = await service.client.put(
                f"/v1/workflows/{workflow_id}", json=document, headers=service.headers
            )
            assert edited.status_code == 200, edited.text
            assert edited.json()["version"] == 2

    async def test_unknown_recipes_and_bad_parameters_are_refused(self, service: Service) -> None:
        unknown = await service.client.post(
            "/v1/workflows/recipes/nope", json={}, headers=service.headers
        )
        assert unknown.status_code == 404
        missing = await service.client.post(
            "/v1/workflows/recipes/new-lead-alert", json={}, headers=service.headers
        )
        assert missing.status_code == 422
        assert {e["field"] for e in missing.json()["errors"]} == {"team_id"}
        injected = await service.client.post(
            "/v1/workflows/recipes/welcome",
            json={"link_base": "http://x/{{ 7 * 7 }}", "surprise": 1},
            headers=service.headers,
        )
        assert injected.status_code == 422
        assert {e["field"] for e in injected.json()["errors"]} == {"link_base", "surprise"}

    async def test_installing_needs_the_write_scope(self, service: Service) -> None:
        reader = token(service.workspace, "workflows:read")
        response = await service.client.post(
            "/v1/workflows/recipes/welcome", json={}, headers=reader
        )
        assert response.status_code == 403


class TestRecipesRun:
    async def test_new_lead_alert_assigns_then_alerts_the_owner_on_slack(
        self, service: Service
    ) -> None:
        await install(service, "new-lead-alert", TEAM | {"slack_channel": "sales"})
        contact_id = await service.create_contact(first_name="Grace", company="Navy")
        [assign] = await service.commands("contact.assign_owner")
        assert assign.data["team_id"] == "team_1"
        assert assign.data["contact_id"] == contact_id
        assert not await service.published(topics.NOTIFICATION_REQUESTS)
        snap = service.contacts[contact_id].model_copy(update={"owner_id": "own_1"})
        await service.publish(
            topics.CONTACTS,
            ContactOwnerAssigned(
                contact_id=contact_id,
                owner_id="own_1",
                team_id="team_1",
                rule="round_robin",
                owner_name="Ada Owner",
                contact=snap,
            ),
            contact_id,
        )
        [alert] = await service.published(topics.NOTIFICATION_REQUESTS)
        assert alert.data["channel"] == "sales"
        text = alert.data["content"]["text"]
        assert "New lead for Ada Owner" in text
        assert "Grace" in text
        assert "Navy" in text
        assert f"/v1/contacts/{contact_id}" in text

    async def test_new_lead_alert_keeps_an_owner_assigned_at_capture_and_alerts_at_once(
        self, service: Service
    ) -> None:
        workflow_id = await install(service, "new-lead-alert", TEAM | {"slack_channel": "sales"})
        contact_id = new_id()
        snap = snapshot(contact_id, service.clock(), first_name="Grace", owner_id="own_2")
        created = ContactCreated(
            contact=snap, cause="lead.captured", owner_name="Bo Owner", owner_email="bo@x.example"
        )
        await service.publish(topics.CONTACTS, created, contact_id)
        assert not await service.commands("contact.assign_owner")
        [alert] = await service.published(topics.NOTIFICATION_REQUESTS)
        assert "New lead for Bo Owner" in alert.data["content"]["text"]
        [run] = await service.runs(workflow_id)
        done = await service.run(run["id"])
        assert done["status"] == "completed"
        assert [(s["step"], s["outcome"]) for s in done["steps"]] == [
            ("assign", "kept"),
            ("alert", "done"),
        ]

    async def test_welcome_sends_day_0_2_and_7_and_stops_for_customers(
        self, service: Service
    ) -> None:
        await install(service, "welcome", {"product": "Leadwire"})
        stays = await service.create_contact(first_name="Ada")
        leaves = await service.create_contact(first_name="Bob")

        def subjects_for(contact: str, requests: Sequence[Envelope]) -> list[str]:
            return [
                r.data["content"]["subject"] for r in requests if r.data["contact_id"] == contact
            ]

        day0 = await service.published(topics.NOTIFICATION_REQUESTS)
        assert subjects_for(stays, day0) == ["Welcome to Leadwire, Ada"]
        await service.update_contact(leaves, lifecycle_stage="customer")
        await service.advance(days=2, seconds=1)
        await service.advance(days=5, seconds=1)
        sent = await service.published(topics.NOTIFICATION_REQUESTS)
        assert len(subjects_for(stays, sent)) == 3
        assert len(subjects_for(leaves, sent)) == 1
        assert all(r.data["purpose"] == "marketing" for r in sent)

    async def test_high_score_makes_the_contact_sql_and_tells_the_owner(
        self, service: Service
    ) -> None:
        await install(service, "high-score")
        contact_id = await service.create_contact(first_name="Lin", owner_id="own_9")
        await service.publish(
            topics.SCORES,
            ScoreThresholdCrossed(
                contact_id=contact_id,
                group="overall",
                threshold="sql",
                value=80,
                score=84,
                direction="up",
                crossed_at=service.clock(),
            ),
            contact_id,
        )
        [stage] = await service.commands("contact.set_lifecycle")
        assert (stage.data["contact_id"], stage.data["stage"]) == (contact_id, "sql")
        [alert] = await service.published(topics.NOTIFICATION_REQUESTS)
        assert "sales-qualified" in alert.data["content"]["text"]
        assert uuid.UUID(alert.id)  # a deterministic effect id, not a free-form string


async def lifecycle(service: Service, contact_id: str, stage: str, **fields: object) -> None:
    """Publish contacts' lifecycle change, with the snapshot it carries."""
    before = service.contacts[contact_id]
    snap = before.model_copy(update={"lifecycle_stage": stage, **fields})
    service.contacts[contact_id] = snap
    await service.publish(
        topics.CONTACTS,
        ContactLifecycleChanged(
            contact_id=contact_id,
            from_stage=before.lifecycle_stage,
            to_stage=stage,
            changed_at=service.clock(),
            churn_reason=snap.churn_reason,
            contact=snap,
        ),
        contact_id,
    )


def for_contact(envelopes: list[Envelope], contact_id: str) -> list[Envelope]:
    return [e for e in envelopes if e.data["contact_id"] == contact_id]


class TestRecipesOverTime:
    async def test_evaluation_call_is_a_task_for_the_owner_14_days_after_becoming_customer(
        self, service: Service
    ) -> None:
        await install(service, "evaluation-call")
        contact_id = await service.create_contact(first_name="Cy", owner_id="own_1")
        await lifecycle(service, contact_id, "customer")
        await service.advance(days=13)
        assert not await service.commands("contact.create_task")
        await service.advance(days=1, seconds=1)
        [task] = await service.commands("contact.create_task")
        assert task.data["contact_id"] == contact_id
        assert "Evaluation call with Cy" in task.data["title"]

    async def test_renewal_reminder_30_days_before_the_subscription_ends(
        self, service: Service
    ) -> None:
        await install(service, "renewal-reminder")
        ends = service.clock() + timedelta(days=40)
        contact_id = await service.create_contact(
            first_name="Di", custom_fields={"subscription_end_date": ends.isoformat()}
        )
        await service.advance(days=9)
        assert not await service.published(topics.NOTIFICATION_REQUESTS)
        await service.advance(days=1, seconds=1)
        [email] = await service.published(topics.NOTIFICATION_REQUESTS)
        assert email.data["contact_id"] == contact_id
        assert email.data["purpose"] == "transactional"
        assert "ends in 30 days" in email.data["content"]["text"]
        [task] = await service.commands("contact.create_task")
        assert task.data["title"].startswith("Renewal: Di")

    async def test_inactivity_win_back_emails_then_tasks_when_the_email_is_not_opened(
        self, service: Service
    ) -> None:
        await install(service, "inactivity-win-back")
        quiet = await service.create_contact(first_name="Ed", last_interaction_at=service.clock())
        reads = await service.create_contact(first_name="Flo", last_interaction_at=service.clock())
        await service.advance(days=30, seconds=1)
        emails = await service.published(topics.NOTIFICATION_REQUESTS)
        assert {e.data["contact_id"] for e in emails} == {quiet, reads}
        assert all(e.data["purpose"] == "marketing" for e in emails)
        opened = EmailOpened(
            engagement_id="open-1",
            contact_id=reads,
            occurred_at=service.clock(),
            notification_id="n1",
        )
        await service.publish(topics.ENGAGEMENT, opened, reads)
        await service.advance(days=3, seconds=1)
        tasks = await service.commands("contact.create_task")
        assert [t.data["contact_id"] for t in tasks] == [quiet]

    async def test_churn_win_back_by_reason(self, service: Service) -> None:
        await install(service, "churn-win-back")
        budget = await service.create_contact(first_name="Gus")
        feature = await service.create_contact(first_name="Hana")
        other = await service.create_contact(first_name="Ivo")
        await lifecycle(service, budget, "churned", churn_reason="budget")
        await lifecycle(service, feature, "churned", churn_reason="missing_feature")
        await lifecycle(service, other, "churned", churn_reason="service")
        requests = await service.published(topics.NOTIFICATION_REQUESTS)
        [offer] = for_contact(requests, budget)
        assert offer.data["content"]["subject"].startswith("An offer to come back")
        [beta] = for_contact(requests, feature)
        assert "beta" in beta.data["content"]["text"]
        assert not for_contact(requests, other)
        [task] = await service.commands("contact.create_task")
        assert task.data["contact_id"] == other
        assert "service" in task.data["description"]

    async def test_product_request_follow_up_when_the_field_changes(self, service: Service) -> None:
        await install(service, "product-request-follow-up")
        contact_id = await service.create_contact(first_name="Jo", custom_fields={})
        await service.update_contact(contact_id, custom_fields={"product_requests": "SSO"})
        [task] = await service.commands("contact.create_task")
        assert task.data["contact_id"] == contact_id
        assert "Requested: SSO" in task.data["description"]
