"""The interpreter, pure, with an injected clock: steps, branches, waits, goals, retries,
time windows across time zones and daylight-saving changes, and the dry run."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.workflows.definitions.domain import WorkflowDocument
from services.workflows.definitions.validation import parse_document
from services.workflows.engine import domain
from services.workflows.engine.domain import (
    Command,
    Context,
    EventArrived,
    Notify,
    Run,
    Start,
    TimerFired,
)

MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CONTACT = {
    "id": "c1",
    "email": "ada@example.com",
    "first_name": "Ada",
    "lifecycle_stage": "lead",
    "owner_id": "o1",
    "custom_fields": {"plan": "pro", "renewal": "2026-06-30"},
}


def workflow(steps: list[dict[str, Any]], **extra: Any) -> WorkflowDocument:
    return parse_document({"name": "W", "trigger": {"type": "manual"}, "steps": steps, **extra})


def run_of(document: WorkflowDocument, enrollment: str = "enr_1") -> Run:
    return Run(enrollment, "wf_1", 1, "c1", document.first_step)


def ctx(now: datetime = MONDAY_10, contact: dict[str, Any] | None = None, **extra: Any) -> Context:
    return Context(CONTACT if contact is None else contact, now, **extra)


class TestActions:
    def test_assign_owner_keeps_an_existing_owner_when_told_and_goes_on_kept(self) -> None:
        document = workflow(
            [
                {
                    "id": "assign",
                    "type": "assign_owner",
                    "team_id": "t1",
                    "keep_existing": True,
                    "on_kept": "alert",
                    "next": "owned",
                },
                {"id": "owned", "type": "wait", "duration": {"seconds": 30}, "next": "alert"},
                {"id": "alert", "type": "send_slack", "channel": "s", "text": "{{ owner.id }}"},
            ]
        )
        kept = domain.advance(document, run_of(document), Start(), ctx())
        assert kept.status == "completed"
        assert [(r.step, r.outcome) for r in kept.records] == [
            ("assign", "kept"),
            ("alert", "done"),
        ]
        assert [type(e.action) for e in kept.effects] == [Notify]
        unowned = domain.advance(
            document, run_of(document), Start(), ctx(contact={**CONTACT, "owner_id": None})
        )
        assert unowned.status == "waiting"
        assert unowned.effects[0].action == Command(
            "contact.assign_owner", {"contact_id": "c1", "team_id": "t1"}
        )

    def test_assign_owner_reassigns_an_owned_contact_by_default(self) -> None:
        document = workflow([{"id": "assign", "type": "assign_owner", "team_id": "t1"}])
        result = domain.advance(document, run_of(document), Start(), ctx())
        assert result.effects[0].action == Command(
            "contact.assign_owner", {"contact_id": "c1", "team_id": "t1"}
        )

    def test_actions_become_commands_and_notification_requests_with_keys(self) -> None:
        document = workflow(
            [
                {"id": "tag", "type": "add_tag", "tag": "vip", "next": "mail"},
                {
                    "id": "mail",
                    "type": "send_email",
                    "subject": "Hi {{ contact.first_name }}",
                    "body": "Plan {{ custom.plan }}",
                    "next": "task",
                },
                {
                    "id": "task",
                    "type": "create_task",
                    "title": "Call {{ contact.first_name }}",
                    "due_in_days": 3,
                },
            ]
        )
        run = run_of(document)
        result = domain.advance(document, run, Start(), ctx())
        assert result.status == "completed"
        actions = [e.action for e in result.effects]
        assert actions[0] == Command("contact.add_tag", {"contact_id": "c1", "tag": "vip"})
        assert isinstance(actions[1], Notify)
        assert actions[1].payload["content"] == {"subject": "Hi Ada", "text": "Plan pro"}
        assert actions[1].payload["idempotency_key"] == "workflow:enr_1:mail:2"
        assert actions[2] == Command(
            "contact.create_task",
            {
                "contact_id": "c1",
                "title": "Call Ada",
                "due_date": "2026-03-05",
                "assignee_id": "o1",
            },
        )
        assert len({e.event_id for e in result.effects}) == 3

    def test_the_same_run_state_gives_the_same_ids(self) -> None:
        document = workflow([{"id": "tag", "type": "add_tag", "tag": "vip"}])
        first = domain.advance(document, run_of(document), Start(), ctx())
        again = domain.advance(document, run_of(document), Start(), ctx())
        assert [e.event_id for e in first.effects] == [e.event_id for e in again.effects]

    def test_a_missing_value_falls_back_to_the_authors_default(self) -> None:
        document = workflow(
            [
                {
                    "id": "s",
                    "type": "send_slack",
                    "channel": "#sales",
                    "text": "New: {{ contact.company | default('unknown company') }} {{ contact.nothing.deeper }}!",
                }
            ]
        )
        result = domain.advance(document, run_of(document), Start(), ctx())
        assert isinstance(result.effects[0].action, Notify)
        assert result.effects[0].action.payload["content"]["text"] == "New: unknown company !"

    def test_the_sandbox_refuses_unsafe_templates_and_the_step_retries_then_fails(self) -> None:
        document = workflow(
            [{"id": "s", "type": "send_slack", "channel": "c", "text": "{{ contact.update({}) }}"}]
        )
        run = run_of(document)
        first = domain.advance(document, run, Start(), ctx(max_attempts=2))
        assert first.retrying
        assert first.status == "active"
        assert first.wait_until == MONDAY_10 + timedelta(seconds=1)
        assert first.effects == []
        second = domain.advance(document, run, Start(), ctx(max_attempts=2))
        assert second.status == "failed"
        assert "unsafe" in (second.error or "")


class TestBranches:
    def test_if_on_contact_conditions(self) -> None:
        document = workflow(
            [
                {
                    "id": "check",
                    "type": "if",
                    "condition": {"field": "custom_fields.plan", "op": "eq", "value": "pro"},
                    "then": "yes",
                    "else": "no",
                },
                {"id": "yes", "type": "add_tag", "tag": "pro"},
                {"id": "no", "type": "add_tag", "tag": "free"},
            ]
        )
        result = domain.advance(document, run_of(document), Start(), ctx())
        assert [r.outcome for r in result.records] == ["then", "done"]
        result = domain.advance(
            document, run_of(document), Start(), ctx(contact={**CONTACT, "custom_fields": {}})
        )
        assert [r.step for r in result.records] == ["check", "no"]

    def test_if_on_an_earlier_outcome_of_the_run(self) -> None:
        document = workflow(
            [
                {
                    "id": "w",
                    "type": "wait_for_event",
                    "event": "email.opened",
                    "timeout": {"days": 2},
                    "next": "check",
                },
                {
                    "id": "check",
                    "type": "if",
                    "condition": {"field": "run.w", "op": "eq", "value": "event"},
                    "then": "hot",
                },
                {"id": "hot", "type": "add_tag", "tag": "engaged"},
            ]
        )
        run = run_of(document)
        waiting = domain.advance(document, run, Start(), ctx())
        assert (waiting.status, waiting.wait_event) == ("waiting", "email.opened")
        assert waiting.wait_until == MONDAY_10 + timedelta(days=2)
        opened = domain.advance(document, run, EventArrived("w", "email.opened", {}), ctx())
        assert [r.outcome for r in opened.records] == ["event", "then", "done"]
        run2 = run_of(document, "enr_2")
        domain.advance(document, run2, Start(), ctx())
        timed_out = domain.advance(
            document, run2, TimerFired("w"), ctx(MONDAY_10 + timedelta(days=2))
        )
        assert [r.outcome for r in timed_out.records] == ["timeout", "else"]

    def test_split_is_stable_per_run_and_roughly_proportional(self) -> None:
        document = workflow(
            [
                {
                    "id": "ab",
                    "type": "split",
                    "branches": [
                        {"name": "a", "percent": 20, "next": "a"},
                        {"name": "b", "percent": 80, "next": "b"},
                    ],
                },
                {"id": "a", "type": "end"},
                {"id": "b", "type": "end"},
            ]
        )
        taken = [
            domain.advance(document, run_of(document, f"enr_{i}"), Start(), ctx())
            .records[0]
            .outcome
            for i in range(1000)
        ]
        assert 150 < taken.count("a") < 250
        again = [
            domain.advance(document, run_of(document, f"enr_{i}"), Start(), ctx())
            .records[0]
            .outcome
            for i in range(1000)
        ]
        assert taken == again


class TestGoals:
    def test_a_run_ends_when_the_goal_is_met(self) -> None:
        document = workflow(
            [
                {"id": "w", "type": "wait", "duration": {"days": 1}, "next": "t"},
                {"id": "t", "type": "add_tag", "tag": "x"},
            ],
            goal={"field": "lifecycle_stage", "op": "eq", "value": "customer"},
        )
        run = run_of(document)
        assert domain.advance(document, run, Start(), ctx()).status == "waiting"
        later = MONDAY_10 + timedelta(days=1)
        result = domain.advance(
            document, run, TimerFired("w"), ctx(later, {**CONTACT, "lifecycle_stage": "customer"})
        )
        assert result.status == "goal_met"
        assert result.effects == []

    def test_a_stale_timer_does_nothing(self) -> None:
        document = workflow(
            [
                {"id": "w", "type": "wait", "duration": {"days": 1}},
            ]
        )
        run = run_of(document)
        run.step = None
        assert domain.advance(document, run, TimerFired("w"), ctx()).records == []


PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


class TestTimeWindows:
    def test_inside_the_window_goes_on_at_once(self) -> None:
        now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday 11:00 in Paris
        assert domain.next_window_start(now, ["mon"], time(9), time(17), PARIS) == now

    def test_after_hours_on_friday_waits_for_monday_morning_local(self) -> None:
        friday_evening = datetime(2026, 3, 6, 23, 0, tzinfo=UTC)  # 18:00 EST
        opens = domain.next_window_start(
            friday_evening, ["mon", "tue", "wed", "thu", "fri"], time(9), time(17), NEW_YORK
        )
        assert opens == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # 09:00 EDT: DST began on the 8th
        assert opens.astimezone(NEW_YORK).hour == 9

    def test_the_same_window_in_two_zones(self) -> None:
        sunday = datetime(2026, 1, 4, 12, 0, tzinfo=UTC)
        paris = domain.next_window_start(sunday, ["mon"], time(9), time(17), PARIS)
        york = domain.next_window_start(sunday, ["mon"], time(9), time(17), NEW_YORK)
        assert paris == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        assert york == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)

    def test_across_the_spring_daylight_saving_change(self) -> None:
        # Paris moves from UTC+1 to UTC+2 in the night of Sunday 29 March 2026.
        saturday = datetime(2026, 3, 28, 17, 0, tzinfo=UTC)
        opens = domain.next_window_start(saturday, ["mon"], time(9), time(17), PARIS)
        assert opens == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
        assert opens.astimezone(PARIS).strftime("%H:%M %Z") == "09:00 CEST"

    def test_a_time_skipped_by_the_change_is_taken_after_the_jump(self) -> None:
        instant = domain.local_instant(date(2026, 3, 29), time(2, 30), PARIS)
        assert instant == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST

    def test_across_the_autumn_change_a_wait_step_uses_the_workflow_zone(self) -> None:
        document = workflow(
            [
                {
                    "id": "w",
                    "type": "wait_for_window",
                    "days": ["mon"],
                    "start": "09:00",
                    "end": "10:00",
                    "next": "t",
                },
                {"id": "t", "type": "add_tag", "tag": "x"},
            ],
            timezone="Europe/Paris",
        )
        saturday = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # Paris leaves CEST on the 25th
        result = domain.advance(document, run_of(document), Start(), ctx(saturday))
        assert result.wait_until == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)  # 09:00 CET


class TestDateWaits:
    def test_until_a_date_field_minus_an_offset_at_a_local_time(self) -> None:
        document = workflow(
            [
                {
                    "id": "w",
                    "type": "wait_until_date",
                    "field": "custom_fields.renewal",
                    "offset": {"days": -30},
                    "at": "09:00",
                    "next": "t",
                },
                {"id": "t", "type": "add_tag", "tag": "renew"},
            ],
            timezone="Europe/Paris",
        )
        result = domain.advance(document, run_of(document), Start(), ctx())
        assert result.wait_until == datetime(2026, 5, 31, 7, 0, tzinfo=UTC)

    def test_a_missing_date_takes_the_missing_branch_and_a_past_one_goes_on(self) -> None:
        document = workflow(
            [
                {
                    "id": "w",
                    "type": "wait_until_date",
                    "field": "custom_fields.renewal",
                    "on_missing": "m",
                    "next": "t",
                },
                {"id": "t", "type": "end"},
                {"id": "m", "type": "end"},
            ]
        )
        missing = domain.advance(
            document, run_of(document), Start(), ctx(contact={**CONTACT, "custom_fields": {}})
        )
        assert [r.step for r in missing.records] == ["w", "m"]
        past = domain.advance(
            document, run_of(document), Start(), ctx(datetime(2027, 1, 1, tzinfo=UTC))
        )
        assert [r.outcome for r in past.records] == ["passed", "ended"]


class TestDryRun:
    def test_follows_waits_to_the_end_and_renders_messages(self) -> None:
        document = workflow(
            [
                {"id": "w", "type": "wait", "duration": {"days": 2}, "next": "e"},
                {
                    "id": "e",
                    "type": "wait_for_event",
                    "event": "email.opened",
                    "timeout": {"days": 1},
                    "on_event": "hot",
                    "on_timeout": "cold",
                },
                {
                    "id": "hot",
                    "type": "send_slack",
                    "channel": "#sales",
                    "text": "{{ contact.first_name }} is hot",
                },
                {"id": "cold", "type": "end"},
            ]
        )
        cold = domain.dry_run(document, CONTACT, ctx(), "wf_1", 1)
        assert cold["status"] == "completed"
        assert [p["step"] for p in cold["path"] if p["outcome"] != "waiting"] == ["w", "e", "cold"]
        hot = domain.dry_run(document, CONTACT, ctx(), "wf_1", 1, frozenset({"email.opened"}))
        assert hot["path"][-1]["would"]["notification"]["content"] == {"text": "Ada is hot"}
