"""Segments on the running service: counts, pages, membership kept current on change and by
the periodic sweep as an injected clock moves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.contacts.consumers import sweep_once
from shared.events import topics
from shared.events.contacts import SegmentEntered, SegmentExited
from shared.events.envelope import Envelope
from shared.events.ingest import ProductLogin
from tests.service.contacts.conftest import Service, random_email
from tests.service.contacts.test_api import create


async def segment(service: Service, name: str, filter: dict[str, Any]) -> dict[str, Any]:
    response = await service.client.post(
        "/v1/segments", json={"name": name, "filter": filter}, headers=service.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def moves(service: Service, segment_id: str) -> list[tuple[str, str]]:
    return [
        ("entered" if isinstance(p, SegmentEntered) else "exited", p.contact_id)
        for p in await service.payloads("segment.entered", "segment.exited")
        if isinstance(p, SegmentEntered | SegmentExited) and p.segment_id == segment_id
    ]


class TestSegmentApi:
    async def test_count_and_pages_of_a_segment(self, service: Service) -> None:
        for i in range(5):
            await create(service, email=random_email(), tags=["vip"] if i % 2 == 0 else [])
        vip = await segment(service, "vip", {"field": "tags", "op": "contains", "value": "vip"})
        assert vip["members"] == 3
        count = await service.client.get(f"/v1/segments/{vip['id']}/count", headers=service.headers)
        assert count.json() == {"count": 3}
        first = await service.client.get(
            f"/v1/segments/{vip['id']}/contacts", params={"limit": 2}, headers=service.headers
        )
        second = await service.client.get(
            f"/v1/segments/{vip['id']}/contacts",
            params={"limit": 2, "cursor": first.json()["next_cursor"]},
            headers=service.headers,
        )
        ids = [c["id"] for c in first.json()["items"] + second.json()["items"]]
        assert len(set(ids)) == 3
        assert second.json()["next_cursor"] is None

    async def test_an_invalid_filter_answers_422_with_the_path_of_the_mistake(
        self, service: Service
    ) -> None:
        response = await service.client.post(
            "/v1/segments",
            json={
                "name": "bad",
                "filter": {"and": [{"field": "score", "op": "gt", "value": "high"}]},
            },
            headers=service.headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "filter.and[0].value"

    async def test_a_preview_counts_without_saving(self, service: Service) -> None:
        await create(service, email=random_email(), lifecycle_stage="customer")
        response = await service.client.post(
            "/v1/segments/preview",
            json={"filter": {"field": "lifecycle_stage", "op": "eq", "value": "customer"}},
            headers=service.headers,
        )
        assert response.json() == {"count": 1}
        assert (await service.client.get("/v1/segments", headers=service.headers)).json() == []


class TestMembershipOnChange:
    async def test_a_change_that_makes_a_contact_match_publishes_segment_entered(
        self, service: Service
    ) -> None:
        contact = await create(service, email=random_email())
        vip = await segment(service, "vip", {"field": "tags", "op": "contains", "value": "vip"})
        await service.client.post(
            f"/v1/contacts/{contact['id']}/tags", json={"tag": "vip"}, headers=service.headers
        )
        await service.client.delete(
            f"/v1/contacts/{contact['id']}/tags/vip", headers=service.headers
        )
        assert await moves(service, vip["id"]) == [
            ("entered", contact["id"]),
            ("exited", contact["id"]),
        ]
        entered = (await service.payloads("segment.entered"))[0]
        assert entered.contact.tags == ["vip"]  # type: ignore[attr-defined]

    async def test_a_captured_lead_enters_matching_segments(self, service: Service) -> None:
        fintech = await segment(
            service, "fintech", {"field": "industry", "op": "eq", "value": "Fintech"}
        )
        contact = await service.captured(
            email=random_email(), custom_fields={"industry": "Fintech"}
        )
        assert await moves(service, fintech["id"]) == [("entered", contact["id"])]


class TestTimeBasedSegments:
    async def test_inactive_for_30_days_enters_as_time_passes_and_leaves_on_activity(
        self, service: Service
    ) -> None:
        contact = await service.captured(email=random_email(), captured_at=service.clock())
        inactive = await segment(
            service,
            "inactive 30 days",
            {"field": "last_interaction_at", "op": "older_than_days", "value": 30},
        )
        assert inactive["time_based"] is True
        service.clock.advance(days=29)
        assert await sweep_once(service.app.state.ctx, service.clock) == 0
        service.clock.advance(days=2)
        assert await sweep_once(service.app.state.ctx, service.clock) == 1
        assert await sweep_once(service.app.state.ctx, service.clock) == 0, "entered only once"
        login = Envelope.of(
            ProductLogin(engagement_id="l1", contact_id=contact["id"], occurred_at=service.clock()),
            source="/leadwire/ingest",
            workspace=service.workspace,
        )
        await service.publish(topics.ENGAGEMENT, login)
        await service.processed("engagement", login)
        assert await moves(service, inactive["id"]) == [
            ("entered", contact["id"]),
            ("exited", contact["id"]),
        ]

    async def test_renewal_due_enters_30_days_before_the_end_date_and_leaves_after_it(
        self, service: Service
    ) -> None:
        end = (service.clock() + timedelta(days=45)).date().isoformat()
        contact = await create(
            service, email=random_email(), custom_fields={"subscription_end_date": end}
        )
        renewal = await segment(
            service,
            "renewal due",
            {"field": "subscription_end_date", "op": "within_next_days", "value": 30},
        )
        assert renewal["members"] == 0
        ctx = service.app.state.ctx
        service.clock.advance(days=10)
        await sweep_once(ctx, service.clock)
        assert await moves(service, renewal["id"]) == []
        service.clock.advance(days=6)
        await sweep_once(ctx, service.clock)
        assert await moves(service, renewal["id"]) == [("entered", contact["id"])]
        service.clock.advance(days=30)
        await sweep_once(ctx, service.clock)
        assert await moves(service, renewal["id"]) == [
            ("entered", contact["id"]),
            ("exited", contact["id"]),
        ]

    async def test_the_background_loop_sweeps_on_its_own(self, tmp_path: Any) -> None:
        from datetime import UTC, datetime

        from services.contacts.main import build_spec
        from shared.app import create_app
        from tests.helpers import embedded_settings, eventually, running, token
        from tests.service.contacts.conftest import FakeClock

        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        app = create_app(build_spec(clock, sweep_interval_s=0.05), embedded_settings(tmp_path))
        headers = token("ws-loop", "contacts:write", "contacts:read")
        async with running(app) as client:
            await client.post(
                "/v1/contacts",
                json={"email": random_email(), "lifecycle_stage": "lead"},
                headers=headers,
            )
            await client.post(
                "/v1/segments",
                json={
                    "name": "old",
                    "filter": {"field": "created_at", "op": "older_than_days", "value": 7},
                },
                headers=headers,
            )
            clock.advance(days=8)
            bus = app.state.ctx.bus

            async def entered() -> bool:
                await app.state.ctx.relay.publish_pending()
                return any(b"segment.entered" in r.value for r in bus.records(topics.CONTACTS))

            await eventually(entered, timeout=10)
