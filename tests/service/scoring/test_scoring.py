"""scoring on SQLite and the in-process bus: rules over the API, engagement and contact events
in, score events out, decay timers, rescore, simulate, explain, merge, delete, RFM."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.scoring.rules.domain import DEFAULT_RULE_SET
from services.scoring.store import SqlStore
from shared.erasure import digests
from shared.events import topics
from shared.events.contacts import ContactDeleted
from shared.events.envelope import Envelope
from tests.helpers import eventually, token
from tests.service.scoring.conftest import Service

RULES: dict[str, Any] = {
    "groups": [{"name": "overall", "half_life_days": 30}, {"name": "product_a", "cap": 20}],
    "thresholds": [
        {"name": "mql", "at": 50, "margin": 5},
        {"name": "sql", "at": 80, "margin": 5},
    ],
    "rules": [
        {"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 40},
        {
            "id": "pricing",
            "kind": "engagement",
            "event": "page.viewed",
            "when": [{"field": "url", "op": "contains", "value": "/pricing"}],
            "points": 10,
        },
        {
            "id": "product-a",
            "kind": "engagement",
            "event": "page.viewed",
            "when": [{"field": "url", "op": "contains", "value": "/product-a"}],
            "points": 15,
            "group": "product_a",
        },
    ],
}


async def save_rules(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    response = await service.client.put("/v1/scoring/rules", json=body, headers=service.headers)
    assert response.status_code == 201, response.text
    saved: dict[str, Any] = response.json()
    return saved


async def rescored(service: Service, rescore_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def done() -> bool:
        response = await service.client.get(
            f"/v1/scoring/rescores/{rescore_id}", headers=service.headers
        )
        found.update(response.json())
        return bool(found["status"] == "done")

    await eventually(done, timeout=20)
    return found


class TestDefaultRules:
    async def test_a_new_workspace_scores_with_the_default_rule_set(self, service: Service) -> None:
        response = await service.client.get("/v1/scoring/rules", headers=service.headers)
        assert response.json()["version"] == 0
        assert response.json()["default"] is True
        contact = await service.contact()
        await service.engage("demo.requested", contact)
        await service.engage("page.viewed", contact, url="https://acme.io/pricing")
        assert await service.overall(contact) == 40
        changes = await service.events("score.changed", contact_id=contact)
        assert [(c["before"], c["after"], c["cause"]) for c in changes] == [
            (0, 30, "demo.requested"),
            (30, 40, "page.viewed"),
        ]
        assert all(c["group"] == "overall" for c in changes)

    async def test_fit_and_negative_rules_follow_the_snapshot(self, service: Service) -> None:
        contact = await service.contact(job_title="VP Sales", email="vp@gmail.com")
        assert await service.overall(contact) == 10  # +15 title, -5 free mail
        await service.update_contact(
            contact, job_title="VP Sales", subscription_status="unsubscribed"
        )
        assert await service.overall(contact) == -5  # +15 title, -20 unsubscribed (email gone)
        causes = [c["cause"] for c in await service.events("score.changed", contact_id=contact)]
        assert causes == ["fit", "fit"]

    async def test_email_opens_are_limited_per_window(self, service: Service) -> None:
        contact = await service.contact()
        for _ in range(7):
            await service.engage("email.opened", contact)
        assert await service.overall(contact) == 5


class TestThresholds:
    async def test_crossing_up_then_down_by_decay_fired_by_its_timer(
        self, service: Service
    ) -> None:
        contact = await service.contact()
        await service.engage("demo.requested", contact)
        await service.engage("demo.requested", contact)  # 60 ≥ 50: MQL
        [up] = await service.events("score.threshold_crossed", contact_id=contact)
        assert (up["threshold"], up["direction"], up["value"], up["score"]) == ("mql", "up", 50, 60)
        start = service.clock.now
        # 60 · 2^(-d/30) < 45 from d = 30 · log2(60/45) ≈ 12.45 days.
        service.clock.advance(days=12)
        service.clock.advance(hours=12)

        async def crossed_down() -> bool:
            return len(await service.events("score.threshold_crossed", contact_id=contact)) == 2

        await eventually(crossed_down, timeout=10)
        down = (await service.events("score.threshold_crossed", contact_id=contact))[1]
        assert (down["threshold"], down["direction"]) == ("mql", "down")
        exact = start + timedelta(days=30 * 0.41503749927884376)  # log2(60/45)
        crossed_at = datetime.fromisoformat(down["crossed_at"])
        assert abs((crossed_at - exact).total_seconds()) < 0.01
        assert 44.99 < down["score"] < 45

    async def test_points_cross_up_only_once_within_the_margin(self, service: Service) -> None:
        await save_rules(service, RULES)
        contact = await service.contact()
        await service.engage("demo.requested", contact)
        await service.engage("page.viewed", contact, url="/pricing")  # 50: up
        service.clock.advance(days=3)  # ≈ 46.7: inside the margin
        await service.engage("page.viewed", contact, url="/pricing")  # ≈ 56.7: still above
        crossings = await service.events("score.threshold_crossed", contact_id=contact)
        assert [(c["threshold"], c["direction"]) for c in crossings] == [("mql", "up")]


class TestRuleSets:
    async def test_invalid_rules_answer_422_with_every_path_and_save_nothing(
        self, service: Service
    ) -> None:
        body = {
            "groups": [{"name": "overall", "half_life_days": -1}],
            "thresholds": [{"name": "sql", "at": 80}, {"name": "mql", "at": 50}],
            "rules": [
                {"id": "x", "kind": "engagement", "event": "page.licked", "points": 1},
                {
                    "id": "y",
                    "kind": "fit",
                    "when": [{"field": "nope", "op": "eq", "value": 1}],
                    "points": 1,
                },
            ],
        }
        response = await service.client.put("/v1/scoring/rules", json=body, headers=service.headers)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_failed"
        assert {e["field"] for e in response.json()["errors"]} == {"groups.0.half_life_days"}
        body["groups"] = [{"name": "overall"}]
        response = await service.client.put("/v1/scoring/rules", json=body, headers=service.headers)
        assert {e["field"]: e["code"] for e in response.json()["errors"]} == {
            "thresholds.1.at": "out_of_order",
            "rules.0.event": "unknown_event",
            "rules.1.when.0.field": "unknown_field",
        }
        current = await service.client.get("/v1/scoring/rules", headers=service.headers)
        assert current.json()["version"] == 0

    async def test_writing_rules_needs_the_write_scope(self, service: Service) -> None:
        reader = token(service.workspace, "scoring:read")
        response = await service.client.put("/v1/scoring/rules", json=RULES, headers=reader)
        assert response.status_code == 403

    async def test_a_new_version_rescores_every_contact_from_the_ledger(
        self, service: Service
    ) -> None:
        contacts = [await service.contact() for _ in range(7)]
        for contact in contacts:
            await service.engage("demo.requested", contact)
        await service.engage("page.viewed", contacts[0], url="/product-a")
        assert await service.overall(contacts[0]) == 30
        saved = await save_rules(service, RULES)
        assert saved["version"] == 1
        assert saved["rescore"]["total"] == 7
        job = await rescored(service, saved["rescore"]["id"])
        assert (job["done"], job["changed"]) == (7, 7)
        assert await service.overall(contacts[0]) == 40
        groups = {
            g["group"]: g["score"] for g in (await service.score(contacts[0])).json()["groups"]
        }
        assert groups == {"overall": 40, "product_a": 15}
        rescores = [c for c in await service.events("score.changed") if c["cause"] == "rescore"]
        assert len([c for c in rescores if c["group"] == "overall"]) == 7
        # Crossing MQL by the rescore is reported too (40 < 50: none here); v1 scores live events.
        await service.engage("page.viewed", contacts[1], url="/pricing")
        assert await service.overall(contacts[1]) == 50
        crossings = await service.events("score.threshold_crossed", contact_id=contacts[1])
        assert [(c["threshold"], c["direction"]) for c in crossings] == [("mql", "up")]


class TestSimulate:
    async def test_simulate_changes_nothing(self, service: Service) -> None:
        contacts = [await service.contact() for _ in range(3)]
        for contact in contacts:
            await service.engage("demo.requested", contact)
        published = len(await service.events())
        response = await service.client.post(
            "/v1/scoring/simulate", json={"rules": RULES, "days": 7}, headers=service.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["contacts"], body["changed"]) == (3, 3)
        assert body["sample"][0]["before"]["overall"] == 30
        assert body["sample"][0]["after"]["overall"] == 40
        one = await service.client.post(
            "/v1/scoring/simulate",
            json={"rules": RULES, "contact_id": contacts[0]},
            headers=service.headers,
        )
        assert one.json()["explain"][0]["score"] == 40
        assert (await service.client.get("/v1/scoring/rules", headers=service.headers)).json()[
            "version"
        ] == 0
        assert await service.overall(contacts[0]) == 30
        assert len(await service.events()) == published

    async def test_simulate_rejects_invalid_rules_with_paths(self, service: Service) -> None:
        response = await service.client.post(
            "/v1/scoring/simulate",
            json={"rules": {"rules": [{"id": "x", "kind": "fit", "points": 1}]}},
            headers=service.headers,
        )
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["rules.rules.0.when"]


class TestExplain:
    async def test_explain_shows_rules_points_and_decay(self, service: Service) -> None:
        contact = await service.contact(job_title="Head of IT")
        await service.engage("demo.requested", contact)
        service.clock.advance(days=30)
        body = (await service.score(contact)).json()
        [overall] = body["groups"]
        assert overall["score"] == 30  # 15 fit + 30 halved
        rules = {r["rule_id"]: r for r in overall["rules"]}
        assert rules["demo-requested"] == {
            "rule_id": "demo-requested",
            "kind": "engagement",
            "points": 30,
            "value": 15,
            "decayed": 15,
        }
        assert rules["senior-title"]["decayed"] == 0

    async def test_another_workspace_sees_404(self, service: Service) -> None:
        contact = await service.contact()
        other = token("other-ws", "scoring:read")
        response = await service.score(contact, headers=other)
        assert response.status_code == 404
        assert response.json()["code"] == "contact_not_found"
        saved = await save_rules(service, RULES)
        job = await service.client.get(
            f"/v1/scoring/rescores/{saved['rescore']['id']}", headers=other
        )
        assert job.status_code == 404


class TestContactLifecycle:
    async def test_merge_sums_the_ledgers_into_the_survivor(self, service: Service) -> None:
        survivor, merged = await service.contact(), await service.contact()
        await service.engage("demo.requested", survivor)
        await service.engage("demo.requested", merged)
        await service.engage("page.viewed", merged, url="/pricing")
        await service.merge(survivor, merged)
        assert await service.overall(survivor) == 70
        assert (await service.score(merged)).status_code == 404
        [change] = [
            c
            for c in await service.events("score.changed", contact_id=survivor)
            if c["cause"] == "merge"
        ]
        assert (change["before"], change["after"]) == (30, 70)
        # Late engagement for the merged id lands on the survivor.
        await service.engage("page.viewed", merged, url="/pricing")
        assert await service.overall(survivor) == 80

    async def test_delete_erases_and_sets_later_engagement_aside(self, service: Service) -> None:
        contact = await service.contact()
        await service.engage("demo.requested", contact)
        await service.delete(contact)
        assert (await service.score(contact)).status_code == 404
        await service.engage("demo.requested", contact)
        assert (await service.score(contact)).status_code == 404
        assert await service.bus.dead_letters(topics.ENGAGEMENT) == []

    async def test_erasure_reaches_engagement_set_aside_under_an_address(
        self, service: Service
    ) -> None:
        await service.engage("demo.requested", None, email="Gone@Acme.io")
        ctx = service.app.state.ctx
        async with ctx.uow() as uow:
            assert await SqlStore(uow.session).count_set_aside(service.workspace) == 1
        contact = str(uuid.uuid4())
        env = await service.publish(
            topics.CONTACTS,
            ContactDeleted(
                contact_id=contact,
                deleted_at=service.clock.now,
                identity_digests=digests(service.workspace, ["email:gone@acme.io"]),
            ),
            contact,
        )
        await service.processed("contacts", env)
        async with ctx.uow() as uow:
            assert await SqlStore(uow.session).count_set_aside(service.workspace) == 0

    async def test_export_gives_everything_held_on_the_person(self, service: Service) -> None:
        contact = await service.contact(email="ann@acme.io", job_title="VP")
        await service.engage("page.viewed", contact, url="/pricing")
        await service.engage("email.opened", None, email="ann.old@acme.io")  # unknown address
        ref = {
            "contact_id": contact,
            "identity_digests": digests(service.workspace, ["email:ann.old@acme.io"]),
        }
        reader = token(service.workspace, "contacts:read")
        response = await service.client.post("/v1/exports/person", json=ref, headers=reader)
        assert response.status_code == 200, response.text
        body = response.json()
        part = body["contacts"][contact]
        assert part["attributes"]["job_title"] == "VP"
        assert [e["type"] for e in part["ledger"]] == ["page.viewed"]
        assert part["score_state"]["g"]["overall"]["e"]["pricing-page"][1] == 10
        assert [(a["email"], a["type"]) for a in body["set_aside"]] == [
            ("ann.old@acme.io", "email.opened")
        ]
        other = token("other-ws", "contacts:read")
        elsewhere = await service.client.post("/v1/exports/person", json=ref, headers=other)
        assert elsewhere.json() == {"contacts": {}, "set_aside": []}

    async def test_engagement_before_the_contact_is_applied_when_it_appears(
        self, service: Service
    ) -> None:
        contact_id = str(uuid.uuid4())
        await service.engage("demo.requested", contact_id)
        assert (await service.score(contact_id)).status_code == 404
        await service.contact(contact_id=contact_id)
        assert await service.overall(contact_id) == 30

    async def test_engagement_by_email_finds_the_contact(self, service: Service) -> None:
        contact = await service.contact(email="ada@acme.io")
        await service.engage("demo.requested", None, email="Ada@acme.io")
        assert await service.overall(contact) == 30

    async def test_malformed_engagement_goes_to_the_dlq_with_its_reason(
        self, service: Service
    ) -> None:
        bad = Envelope(
            source="/test",
            type="page.viewed",
            workspace=service.workspace,
            correlationid="c",
            data={"engagement_id": "e1", "contact_id": "x", "occurred_at": "yesterday"},
        )
        await service.bus.publish(topics.ENGAGEMENT, f"{service.workspace}:x", bad)
        await service.processed("engagement", bad)
        [dead] = await service.bus.dead_letters(topics.ENGAGEMENT)
        assert "occurred_at" in str(dead.headers)


class TestRfm:
    async def test_purchases_and_logins_make_segments_and_churn_risk(
        self, service: Service
    ) -> None:
        people = [await service.contact() for _ in range(5)]
        # Person i: 5 - i activities, one a day, the last one i·10 days ago.
        for i, person in enumerate(people):
            for k in range(5 - i):
                occurred = service.clock.now - timedelta(days=i * 10 + k)
                await service.engage(
                    "purchase.completed", person, amount=100, currency="EUR", occurred_at=occurred
                )
        summary = (await service.client.get("/v1/rfm/summary", headers=service.headers)).json()
        assert summary["customers"] == 5
        assert sum(summary["segments"].values()) == 5
        changes = await service.events("churn_risk.changed")
        assert {c["contact_id"] for c in changes} == set(people)
        view = (await service.score(people[0])).json()["rfm"]
        assert view["purchases"] == 5
        assert view["monetary"] == 500

    async def test_time_alone_raises_churn_risk_through_a_timer(self, service: Service) -> None:
        person = await service.contact()
        for day in (21, 14, 7, 0):
            occurred = service.clock.now - timedelta(days=day)
            await service.engage("product.login", person, occurred_at=occurred)
        before = await service.events("churn_risk.changed", contact_id=person)
        assert before[-1]["band"] == "low"
        service.clock.advance(days=30)

        async def banded() -> bool:
            changes = await service.events("churn_risk.changed", contact_id=person)
            return len(changes) > len(before) and changes[-1]["band"] != "low"

        await eventually(banded, timeout=10)
        later = (await service.events("churn_risk.changed", contact_id=person))[-1]
        assert later["previous_band"] == "low"
        assert later["band"] in {"medium", "high"}


@pytest.mark.parametrize("rules", [DEFAULT_RULE_SET])
def test_default_rules_round_trip_through_the_api_shape(rules: dict[str, Any]) -> None:
    from services.scoring.rules.domain import parse_rule_set

    assert parse_rule_set(parse_rule_set(rules).model_dump(mode="json")) == parse_rule_set(rules)
