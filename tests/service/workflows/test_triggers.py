"""Each trigger kind enrolls the contacts it names, and only those (SQLite, in-process bus)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import topics
from shared.events.contacts import (
    ContactCreated,
    ContactLifecycleChanged,
    SegmentEntered,
    SegmentExited,
    TaskCompleted,
    TaskSnapshot,
)
from shared.events.ingest import LeadCaptured, PageViewed
from shared.events.scores import ChurnRiskChanged, ScoreThresholdCrossed
from tests.service.workflows.conftest import Service, snapshot

TAG_STEP = [{"id": "t", "type": "add_tag", "tag": "touched"}]


async def enrolled(service: Service, workflow_id: str) -> list[str]:
    return sorted(r["contact_id"] for r in await service.runs(workflow_id))


def wf(trigger: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": f"on {trigger['type']}", "trigger": trigger, "steps": TAG_STEP, **extra}


class TestContactTriggers:
    async def test_contact_created_with_conditions(self, service: Service) -> None:
        w = await service.workflow(
            wf(
                {
                    "type": "contact_created",
                    "conditions": {"field": "source", "op": "eq", "value": "webinar"},
                }
            )
        )
        yes = await service.create_contact(source="webinar")
        await service.create_contact(source="ads")
        assert await enrolled(service, w) == [yes]
        commands = await service.commands("contact.add_tag")
        assert [(c.data["contact_id"], c.data["tag"]) for c in commands] == [(yes, "touched")]

    async def test_field_changed_from_and_to(self, service: Service) -> None:
        w = await service.workflow(
            wf({"type": "field_changed", "field": "country", "from": "FR", "to": "DE"})
        )
        a = await service.create_contact(country="FR")
        b = await service.create_contact(country="IT")
        await service.update_contact(a, country="DE")
        await service.update_contact(b, country="DE")
        assert await enrolled(service, w) == [a]

    async def test_custom_field_changed(self, service: Service) -> None:
        w = await service.workflow(
            wf({"type": "field_changed", "field": "custom_fields.plan", "to": "pro"})
        )
        a = await service.create_contact(custom_fields={"plan": "free"})
        await service.update_contact(a, custom_fields={"plan": "pro"})
        assert await enrolled(service, w) == [a]

    async def test_tag_added_and_removed(self, service: Service) -> None:
        added = await service.workflow(wf({"type": "tag_added", "tag": "VIP"}))
        removed = await service.workflow(wf({"type": "tag_removed", "tag": "vip"}))
        a = await service.create_contact(tags=["vip"])
        b = await service.create_contact()
        await service.update_contact(b, tags=["vip"])
        await service.update_contact(a, tags=[])
        assert await enrolled(service, added) == sorted([a, b])
        assert await enrolled(service, removed) == [a]

    async def test_list_joined_and_left(self, service: Service) -> None:
        joined = await service.workflow(wf({"type": "list_joined", "list": "newsletter"}))
        left = await service.workflow(wf({"type": "list_left", "list": "newsletter"}))
        a = await service.create_contact()
        await service.update_contact(a, lists=["newsletter"])
        await service.update_contact(a, lists=[])
        assert await enrolled(service, joined) == [a]
        assert await enrolled(service, left) == [a]

    async def test_lifecycle_changed(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "lifecycle_changed", "to": "customer"}))
        a = await service.create_contact()
        snap = service.contacts[a].model_copy(update={"lifecycle_stage": "customer"})
        await service.publish(
            topics.CONTACTS,
            ContactLifecycleChanged(
                contact_id=a,
                from_stage="lead",
                to_stage="customer",
                changed_at=service.clock(),
                contact=snap,
            ),
            a,
        )
        assert await enrolled(service, w) == [a]

    async def test_segment_entered_and_exited(self, service: Service) -> None:
        entered = await service.workflow(wf({"type": "segment_entered", "segment_id": "seg_1"}))
        exited = await service.workflow(wf({"type": "segment_exited", "segment_id": "seg_1"}))
        a = await service.create_contact()
        at = service.clock()
        await service.publish(
            topics.CONTACTS,
            SegmentEntered(segment_id="seg_1", segment_name="Hot", contact_id=a, at=at),
            a,
        )
        await service.publish(
            topics.CONTACTS,
            SegmentExited(segment_id="seg_1", segment_name="Hot", contact_id=a, at=at),
            a,
        )
        assert await enrolled(service, entered) == [a]
        assert await enrolled(service, exited) == [a]

    async def test_task_completed(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "task_completed", "title_contains": "demo"}))
        a = await service.create_contact()
        task = TaskSnapshot(
            id="t1", contact_id=a, title="Book the demo", status="done", created_at=service.clock()
        )
        await service.publish(topics.CONTACTS, TaskCompleted(task=task), a)
        assert await enrolled(service, w) == [a]


class TestFormSubmitted:
    async def test_a_form_submission_pairs_lead_and_contact_in_either_order(
        self, service: Service
    ) -> None:
        w = await service.workflow(wf({"type": "form_submitted", "form_id": "frm_demo"}))

        def lead(submission: str, form: str) -> LeadCaptured:
            return LeadCaptured(
                submission_id=submission,
                source="form",
                source_id=form,
                dedupe_key=f"email:{submission}",
                captured_at=service.clock(),
            )

        async def contact_of(submission: str) -> str:
            contact_id = f"c_{submission}"
            snap = snapshot(contact_id, service.clock())
            await service.publish(
                topics.CONTACTS,
                ContactCreated(contact=snap, cause="lead.captured", submission_id=submission),
                contact_id,
            )
            return contact_id

        await service.publish(topics.LEADS, lead("s1", "frm_demo"), "s1")
        first = await contact_of("s1")
        second = await contact_of("s2")
        await service.publish(topics.LEADS, lead("s2", "frm_demo"), "s2")
        await service.publish(topics.LEADS, lead("s3", "frm_other"), "s3")
        await contact_of("s3")
        assert await enrolled(service, w) == sorted([first, second])


class TestOtherTopics:
    async def test_engagement_event_with_conditions_found_by_email(self, service: Service) -> None:
        w = await service.workflow(
            wf(
                {
                    "type": "engagement",
                    "event": "page.viewed",
                    "conditions": {"field": "url", "op": "contains", "value": "/pricing"},
                }
            )
        )
        a = await service.create_contact()
        b = await service.create_contact()
        for contact, url in ((a, "https://x.io/pricing"), (b, "https://x.io/blog")):
            view = PageViewed(
                engagement_id=contact + url,
                email=f"{contact}@example.com",
                occurred_at=service.clock(),
                url=url,
            )
            await service.publish(topics.ENGAGEMENT, view, contact)
        assert await enrolled(service, w) == [a]

    async def test_score_threshold_crossed_upwards(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "score_threshold_crossed", "threshold": "mql"}))
        a = await service.create_contact()
        b = await service.create_contact()
        for contact, direction in ((a, "up"), (b, "down")):
            crossed = ScoreThresholdCrossed(
                contact_id=contact,
                group="overall",
                threshold="mql",
                value=50,
                score=51,
                direction=direction,
                crossed_at=service.clock(),
            )
            await service.publish(topics.SCORES, crossed, contact)
        assert await enrolled(service, w) == [a]

    async def test_churn_risk_changed_to_high(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "churn_risk_changed", "band": "high"}))
        a = await service.create_contact()
        risk = ChurnRiskChanged(
            contact_id=a, risk=80, band="high", segment="at_risk", previous_band="low"
        )
        await service.publish(topics.SCORES, risk, a)
        assert await enrolled(service, w) == [a]


class TestTimeTriggers:
    async def test_date_relative_fires_on_time_and_follows_a_changed_date(
        self, service: Service
    ) -> None:
        w = await service.workflow(
            wf({"type": "date_relative", "field": "custom_fields.renewal", "offset": {"days": -30}})
        )
        renewal = service.clock() + timedelta(days=40)
        a = await service.create_contact(custom_fields={"renewal": renewal.isoformat()})
        assert await service.advance(days=9) == 0
        # The date moves five days later: the timer moves with it, no periodic scan.
        await service.update_contact(
            a, custom_fields={"renewal": (renewal + timedelta(days=5)).isoformat()}
        )
        assert await service.advance(days=1, seconds=1) == 0
        assert await enrolled(service, w) == []
        assert await service.advance(days=5) == 1
        assert await enrolled(service, w) == [a]

    async def test_date_relative_schedules_known_contacts_when_enabled(
        self, service: Service
    ) -> None:
        renewal = service.clock() + timedelta(days=3)
        a = await service.create_contact(custom_fields={"renewal": renewal.date().isoformat()})
        w = await service.workflow(
            wf({"type": "date_relative", "field": "custom_fields.renewal", "offset": {"days": -1}}),
            enabled=False,
        )
        await service.client.post(f"/v1/workflows/{w}/enable", headers=service.headers)
        await service.advance(days=2)
        assert await enrolled(service, w) == [a]

    async def test_inactivity_is_rescheduled_by_each_interaction(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "inactivity", "days": 30}))
        a = await service.create_contact(last_interaction_at=service.clock())
        await service.advance(days=20)
        view = PageViewed(
            engagement_id="e1", contact_id=a, occurred_at=service.clock(), url="https://x.io"
        )
        await service.publish(topics.ENGAGEMENT, view, a)
        await service.advance(days=15)
        assert await enrolled(service, w) == []
        await service.advance(days=15, seconds=1)
        assert await enrolled(service, w) == [a]


class TestManualEnrollment:
    async def test_one_contact_or_a_segment(self, service: Service) -> None:
        w = await service.workflow(wf({"type": "manual"}))
        a = await service.create_contact()
        b = await service.create_contact()
        c = await service.create_contact()
        for contact in (b, c):
            await service.publish(
                topics.CONTACTS,
                SegmentEntered(
                    segment_id="seg_9", segment_name="S", contact_id=contact, at=service.clock()
                ),
                contact,
            )
        one = await service.client.post(
            f"/v1/workflows/{w}/enrollments", json={"contact_id": a}, headers=service.headers
        )
        assert one.status_code == 201, one.text
        many = await service.client.post(
            f"/v1/workflows/{w}/enrollments", json={"segment_id": "seg_9"}, headers=service.headers
        )
        assert len(many.json()["enrolled"]) == 2
        again = await service.client.post(
            f"/v1/workflows/{w}/enrollments", json={"contact_id": a}, headers=service.headers
        )
        assert again.status_code == 409
        assert again.json()["reason"] == "reenrollment_never"
        assert await enrolled(service, w) == sorted([a, b, c])


async def test_the_fake_clock_starts_on_a_monday(service: Service) -> None:
    assert service.clock() == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
