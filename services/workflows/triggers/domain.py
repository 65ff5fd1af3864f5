"""Triggers: what happened to a contact (a fact), which workflows it starts, who may enter
and when the time-based triggers are due. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.workflows.conditions import domain as conditions
from services.workflows.definitions import domain as defs
from services.workflows.engine.domain import date_offset, zone_of
from shared.identity import identity_digest


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


def contact_ids_of(event_type: str, data: Mapping[str, Any]) -> list[str]:
    """The contacts a `leadwire.contacts.v1` event is about."""
    found = []
    snapshot = data.get("contact")
    if isinstance(snapshot, dict) and snapshot.get("id"):
        found.append(str(snapshot["id"]))
    task = data.get("task")
    if isinstance(task, dict) and task.get("contact_id"):
        found.append(str(task["contact_id"]))
    for name in ("contact_id", "survivor_id", "merged_id"):
        if data.get(name):
            found.append(str(data[name]))
    return list(dict.fromkeys(found))


def contact_digest(workspace: str, contact_id: str) -> str:
    """The erasure marker of a contact id (`shared.erasure`): it names nobody by itself."""
    return identity_digest(workspace, f"contact:{contact_id}")


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


# --- the workspace's triggers, indexed ------------------------------------------------------

Enabled = tuple[str, int, defs.WorkflowDocument]  # (workflow id, version, document)
# A fact's value under which keyed triggers are filed: (the fact's data field, its value).
_Key = tuple[str, str]


class TriggerIndex:
    """The enabled workflows of a workspace filed by trigger kind and, where the trigger names
    one, by the value a fact must carry (a tag, a segment, a form, `source` equal to X …).

    A fact looks up only the workflows that could match it (those filed under its kind and its
    own values, plus its kind's triggers without a key), so 100 workflows do not mean 100
    evaluations per event. It is a pre-filter: every candidate is still checked in full by
    `fact_matches`.
    """

    def __init__(self, enabled: Sequence[Enabled]) -> None:
        self.enabled = tuple(enabled)
        # Items with their place in `enabled`, so candidates keep the saved order.
        self._unkeyed: dict[str, list[tuple[int, Enabled]]] = {}
        self._keyed: dict[str, dict[_Key, list[tuple[int, Enabled]]]] = {}
        for place, item in enumerate(self.enabled):
            trigger = item[2].trigger
            key = trigger_key(trigger)
            if key is None:
                self._unkeyed.setdefault(trigger.type, []).append((place, item))
            else:
                filed = self._keyed.setdefault(trigger.type, {}).setdefault(key, [])
                filed.append((place, item))
        # The data fields each kind's keyed triggers are filed by.
        self._fields = {
            kind: tuple(dict.fromkeys(f for f, _ in keyed)) for kind, keyed in self._keyed.items()
        }

    def of_kind(self, kinds: Collection[str]) -> list[Enabled]:
        """Every enabled workflow whose trigger is one of `kinds`."""
        return [item for item in self.enabled if item[2].trigger.type in kinds]

    def candidates(self, fact: Fact, contact: Mapping[str, Any] | None) -> list[Enabled]:
        """The workflows `fact` may trigger (a superset of those it does), in saved order."""
        found = self._unkeyed.get(fact.kind, [])
        keyed = self._keyed.get(fact.kind)
        if keyed:
            parts = [found]
            for name in self._fields[fact.kind]:
                value = _fact_value(fact, contact, name)
                if value is not None and (name, value) in keyed:
                    parts.append(keyed[(name, value)])
            if len(parts) > 1:
                found = sorted(p for part in parts for p in part)
        return [item for _, item in found]

    def matching(
        self, fact: Fact, contact: Mapping[str, Any] | None, now: datetime
    ) -> list[Enabled]:
        """The workflows `fact` triggers."""
        return [
            item
            for item in self.candidates(fact, contact)
            if fact_matches(item[2].trigger, fact, contact, now)
        ]


def trigger_key(trigger: defs.Trigger) -> _Key | None:
    """The (data field, value) a fact must carry for the trigger to match; None when the
    trigger has no such single value (it is then checked against every fact of its kind)."""
    match trigger:
        case defs.TagTrigger():
            return ("tag", trigger.tag.strip().lower())
        case defs.ListTrigger():
            return ("list", trigger.list.strip().lower())
        case defs.FieldChangedTrigger():
            return ("field", trigger.field)
        case defs.SegmentTrigger():
            return ("segment_id", trigger.segment_id)
        case defs.EngagementTrigger():
            return ("type", trigger.event)
        case defs.FormSubmittedTrigger() if trigger.form_id is not None:
            return ("form_id", trigger.form_id)
        case defs.LifecycleTrigger() if trigger.to_stage is not None:
            return ("to", trigger.to_stage)
        case defs.ContactCreatedTrigger() if trigger.conditions is not None:
            node = trigger.compiled("conditions", trigger.conditions, "contact")
            equal = _required_equality(node)
            return None if equal is None else (f"contact.{equal[0]}", equal[1])
    return None


def _required_equality(node: conditions.Filter | None) -> tuple[str, str] | None:
    """A text field the filter requires to equal one value (`source` eq `form-x`, alone or in
    an `and`): (field, value); else None."""
    if isinstance(node, conditions.Condition):
        if (
            node.op == "eq"
            and node.kind in ("text", "enum")
            and isinstance(node.value, str)
            and not node.field.startswith("run.")
        ):
            return node.field, node.value
        return None
    if isinstance(node, conditions.Group) and node.op == "and":
        for child in node.children:
            found = _required_equality(child)
            if found is not None:
                return found
    return None


def _fact_value(fact: Fact, contact: Mapping[str, Any] | None, name: str) -> str | None:
    """The fact's value under a key's field, normalised as its trigger compares it."""
    data = fact.data
    if name.startswith("contact."):
        # What an `eq` condition compares: the value as text (a missing value, a boolean or a
        # list never equals a text).
        record = data.get("contact") or contact or {}
        value = conditions.lookup(record, name.removeprefix("contact."), {})
        if value is None or isinstance(value, bool | list | tuple | set | frozenset):
            return None
        return str(value)
    if name in ("tag", "list"):
        return str(data.get(name, "")).lower()
    value = data.get(name)
    return value if isinstance(value, str) else None
