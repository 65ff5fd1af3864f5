"""Triggers: what happened to a contact (a fact), which workflows it starts, who may enter
and when the time-based triggers are due. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.workflows.conditions import domain as conditions
from services.workflows.definitions import domain as defs
from services.workflows.engine.domain import date_offset, zone_of


@dataclass(frozen=True)
class Fact:
    """Something that happened to one contact, in the words of the trigger kinds."""

    kind: str  # a trigger type: `contact_created`, `tag_added`, `engagement`, …
    contact_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    event_type: str | None = None  # the event it came from, for waits on events


def facts_of_contact_event(event_type: str, data: Mapping[str, Any]) -> list[Fact]:
    """The facts a `leadwire.contacts.v1` event states."""
    if event_type == "contact.created":
        contact = data["contact"]
        facts = [Fact("contact_created", contact["id"], data, event_type)]
        for tag in contact.get("tags") or []:
            facts.append(Fact("tag_added", contact["id"], {"tag": tag}, event_type))
        for name in contact.get("lists") or []:
            facts.append(Fact("list_joined", contact["id"], {"list": name}, event_type))
        return facts
    if event_type == "contact.updated":
        cid = data["contact_id"]
        facts = [Fact("contact_updated", cid, data, event_type)]
        for name, change in (data.get("changes") or {}).items():
            before, after = change.get("before"), change.get("after")
            if name in ("tags", "lists"):
                added = set(after or []) - set(before or [])
                removed = set(before or []) - set(after or [])
                on, off, key = (
                    ("tag_added", "tag_removed", "tag")
                    if name == "tags"
                    else ("list_joined", "list_left", "list")
                )
                facts += [Fact(on, cid, {key: v}, event_type) for v in sorted(added)]
                facts += [Fact(off, cid, {key: v}, event_type) for v in sorted(removed)]
                continue
            facts.append(
                Fact("field_changed", cid, {"field": name, "from": before, "to": after}, event_type)
            )
            if (
                name == "custom_fields"
                and isinstance(before or {}, dict)
                and isinstance(after or {}, dict)
            ):
                b, a = before or {}, after or {}
                for key in sorted(set(b) | set(a)):
                    if b.get(key) != a.get(key):
                        facts.append(
                            Fact(
                                "field_changed",
                                cid,
                                {
                                    "field": f"custom_fields.{key}",
                                    "from": b.get(key),
                                    "to": a.get(key),
                                },
                                event_type,
                            )
                        )
        return facts
    if event_type == "contact.lifecycle_changed":
        return [
            Fact(
                "lifecycle_changed",
                data["contact_id"],
                {"from": data.get("from_stage"), "to": data["to_stage"]},
                event_type,
            )
        ]
    if event_type == "contact.owner_assigned":
        return [
            Fact(
                "field_changed",
                data["contact_id"],
                {
                    "field": "owner_id",
                    "from": data.get("previous_owner_id"),
                    "to": data["owner_id"],
                },
                event_type,
            )
        ]
    if event_type == "segment.entered":
        return [
            Fact(
                "segment_entered",
                data["contact_id"],
                {"segment_id": data["segment_id"]},
                event_type,
            )
        ]
    if event_type == "segment.exited":
        return [
            Fact(
                "segment_exited", data["contact_id"], {"segment_id": data["segment_id"]}, event_type
            )
        ]
    if event_type == "task.completed":
        task = data["task"]
        return [Fact("task_completed", task["contact_id"], task, event_type)]
    if event_type == "task.created":
        task = data["task"]
        return [Fact("task_created", task["contact_id"], task, event_type)]
    return []


def form_submitted(contact_id: str, form_id: str, submission_id: str) -> Fact:
    return Fact(
        "form_submitted",
        contact_id,
        {"form_id": form_id, "submission_id": submission_id},
        "form.submitted",
    )


def facts_of_score_event(event_type: str, data: Mapping[str, Any]) -> list[Fact]:
    if event_type == "score.threshold_crossed":
        return [Fact("score_threshold_crossed", data["contact_id"], data, event_type)]
    if event_type == "churn_risk.changed":
        return [Fact("churn_risk_changed", data["contact_id"], data, event_type)]
    return []


def fact_matches(
    trigger: defs.Trigger, fact: Fact, contact: Mapping[str, Any] | None, now: datetime
) -> bool:
    """Whether `fact` is what the trigger waits for (its own conditions included)."""
    if trigger.type != fact.kind:
        return False
    data = fact.data
    match trigger:
        case defs.ContactCreatedTrigger():
            if trigger.conditions is None:
                return True
            node = trigger.compiled("conditions", trigger.conditions, "contact")
            return node is not None and conditions.matches(
                node, data.get("contact") or contact or {}, now
            )
        case defs.FieldChangedTrigger():
            if data.get("field") != trigger.field:
                return False
            if "from_value" in trigger.model_fields_set and not _same(
                data.get("from"), trigger.from_value
            ):
                return False
            return "to_value" not in trigger.model_fields_set or _same(
                data.get("to"), trigger.to_value
            )
        case defs.TagTrigger():
            return str(data.get("tag", "")).lower() == trigger.tag.strip().lower()
        case defs.ListTrigger():
            return str(data.get("list", "")).lower() == trigger.list.strip().lower()
        case defs.LifecycleTrigger():
            return (trigger.from_stage is None or data.get("from") == trigger.from_stage) and (
                trigger.to_stage is None or data.get("to") == trigger.to_stage
            )
        case defs.FormSubmittedTrigger():
            return trigger.form_id is None or data.get("form_id") == trigger.form_id
        case defs.EngagementTrigger():
            if data.get("type") != trigger.event:
                return False
            if trigger.conditions is None:
                return True
            node = trigger.compiled("conditions", trigger.conditions, "event")
            return node is not None and conditions.matches(node, data, now)
        case defs.ScoreThresholdTrigger():
            return (
                (trigger.threshold is None or data.get("threshold") == trigger.threshold)
                and (trigger.group is None or data.get("group") == trigger.group)
                and data.get("direction") == trigger.direction
            )
        case defs.ChurnRiskTrigger():
            return (trigger.band is None or data.get("band") == trigger.band) and (
                trigger.segment is None or data.get("segment") == trigger.segment
            )
        case defs.SegmentTrigger():
            return data.get("segment_id") == trigger.segment_id
        case defs.TaskCompletedTrigger():
            needle = trigger.title_contains
            return needle is None or needle.lower() in str(data.get("title", "")).lower()
        case _:
            # date_relative and inactivity fire from timers; manual only from the API.
            return trigger.type in ("date_relative", "inactivity") and fact.kind == trigger.type


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return actual.lower() == expected.lower()
    return bool(actual == expected)


@dataclass(frozen=True)
class PastEnrollment:
    """What the re-enrollment policy needs to know of a contact's last run in a workflow."""

    enrolled_at: datetime
    ended: bool


def may_enroll(
    document: defs.WorkflowDocument,
    contact: Mapping[str, Any] | None,
    last: PastEnrollment | None,
    now: datetime,
) -> str | None:
    """None when the contact may enter now; else why not (a machine-readable reason)."""
    if contact is None:
        return "unknown_contact"
    if last is not None:
        policy = document.reenrollment
        if not last.ended:
            return "already_enrolled"
        if policy.policy == "never":
            return "reenrollment_never"
        if policy.policy == "after_days" and now - last.enrolled_at < timedelta(
            days=policy.days or 0
        ):
            return "reenrollment_too_soon"
    if document.exclusion_segment and document.exclusion_segment in (contact.get("segments") or []):
        return "excluded"
    if document.conditions is not None:
        node = document.compiled("conditions", document.conditions, "contact")
        if node is None or not conditions.matches(node, contact, now):
            return "conditions_not_met"
    return None


def event_awaited(step: defs.Step, event_type: str, data: Mapping[str, Any], now: datetime) -> bool:
    """Whether an event completes a wait-for-event step (its type and conditions)."""
    if not isinstance(step, defs.WaitForEventStep) or step.event != event_type:
        return False
    if step.conditions is None:
        return True
    node = step.compiled("conditions", step.conditions, "event")
    return node is not None and conditions.matches(node, data, now)


def trigger_due(
    trigger: defs.Trigger, contact: Mapping[str, Any], zone_name: str
) -> datetime | None:
    """When a date-relative or inactivity trigger fires for a contact; None: not scheduled."""
    if isinstance(trigger, defs.DateRelativeTrigger):
        return date_offset(
            contact, trigger.field, trigger.offset.delta, trigger.at, zone_of(zone_name)
        )
    if isinstance(trigger, defs.InactivityTrigger):
        last = conditions.to_datetime(
            contact.get("last_interaction_at") or contact.get("created_at")
        )
        return None if last is None else last + timedelta(days=trigger.days)
    return None


def timer_trigger_fires(
    trigger: defs.Trigger,
    contact: Mapping[str, Any],
    zone_name: str,
    due_at: datetime,
    now: datetime,
) -> bool:
    """A fired trigger timer still stands: the contact's date did not move in the meantime."""
    due = trigger_due(trigger, contact, zone_name)
    return (
        due is not None
        and abs((due - due_at).total_seconds()) < 1
        and due <= now + timedelta(seconds=1)
    )
