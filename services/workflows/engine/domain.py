"""The workflow interpreter: pure, its clock injected. Given a run, its workflow version, the
contact and what just happened (a start, a fired timer, an awaited event), it says which steps
ran, what effects they have (commands, notification requests, enrollments), and where the run
now stands: waiting until a time or an event, retrying, or ended."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.workflows.conditions import domain as conditions
from services.workflows.definitions import domain as defs
from services.workflows.templates import domain as templates

# Namespace of the deterministic ids of everything a run emits (uuid5 of the idempotency key).
EFFECT_NAMESPACE = uuid.UUID("6f1d3a8e-2b7c-4c1e-9a55-3d0b7e1f4a20")
_NAMESPACE_BYTES = EFFECT_NAMESPACE.bytes
MAX_STEPS_PER_ADVANCE = 200
WEEKDAY_NUMBERS = {name: i for i, name in enumerate(defs.WEEKDAYS)}

Status = Literal["active", "waiting", "completed", "goal_met", "exited", "failed"]


class StepFailure(Exception):
    """A step could not do its work this time (a template the sandbox refuses, a workflow to
    enroll into that is not enabled); it is retried with backoff, then fails the run."""


@dataclass
class Run:
    """A run's durable state, as the interpreter reads and changes it."""

    enrollment_id: str
    workflow_id: str
    version: int
    contact_id: str
    step: str | None
    outcomes: dict[str, str] = field(default_factory=dict)
    seq: int = 0  # steps executed so far in this run (attempts included)
    attempt: int = 0  # failed attempts of the current step


@dataclass(frozen=True)
class Start:
    """Run the steps from the run's current step (a new run, a retry)."""


@dataclass(frozen=True)
class TimerFired:
    """The due time of the wait the run parks on has come."""

    step: str


@dataclass(frozen=True)
class EventArrived:
    """An awaited event for the contact arrived while the run waited on `step`."""

    step: str
    event_type: str
    data: Mapping[str, Any]


Trigger = Start | TimerFired | EventArrived


@dataclass(frozen=True)
class Command:
    """A contact command for `leadwire.contact-commands.v1`."""

    event_type: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Notify:
    """A `NotificationRequested` for `leadwire.notification-requests.v1`."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Enroll:
    """Enroll the contact into another workflow."""

    workflow_id: str


Action = Command | Notify | Enroll


@dataclass(frozen=True)
class Effect:
    """An action of one step, with the idempotency key the receiver deduplicates on."""

    step: str
    key: str
    action: Action

    @property
    def event_id(self) -> str:
        return effect_id(self.key)


@dataclass(frozen=True)
class StepRecord:
    """One line of run history."""

    step: str
    step_type: str
    outcome: str
    at: datetime
    seq: int
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Advance:
    """Where a run stands after `advance`: what ran, what to emit, what to wait for."""

    status: Status
    step: str | None
    records: list[StepRecord] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    wait_until: datetime | None = None  # a timer is due then (a wait, a timeout, a retry)
    wait_event: str | None = None  # the event type awaited
    retrying: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Context:
    """What a step may read besides the run: the contact, the clock, the workspace."""

    contact: Mapping[str, Any] | None
    now: datetime
    timezone: str = "UTC"
    enabled_workflows: frozenset[str] = frozenset()
    max_attempts: int = 3
    retry_base_s: float = 1.0


def effect_key(run: Run, step: str) -> str:
    """The idempotency key of an effect: enrollment, step and the run's attempt number."""
    return f"workflow:{run.enrollment_id}:{step}:{run.seq}"


def effect_id(key: str) -> str:
    """`str(uuid.uuid5(EFFECT_NAMESPACE, key))`, formatted from the SHA-1 digest directly (a
    third of the cost: one per action a run takes)."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def enrollment_of_key(key: str) -> str | None:
    """The enrollment an idempotency key (or a notification's key) belongs to."""
    parts = key.split(":")
    return parts[1] if len(parts) >= 4 and parts[0] == "workflow" else None


def step_of_key(key: str) -> str | None:
    """The step an idempotency key (or a notification's key) belongs to."""
    parts = key.split(":")
    return parts[2] if len(parts) >= 4 and parts[0] == "workflow" else None


def parsed_goal(document: defs.WorkflowDocument) -> conditions.Filter | None:
    if document.goal is None:
        return None
    return document.compiled("goal", document.goal, "contact")


def goal_met(
    document: defs.WorkflowDocument, contact: Mapping[str, Any] | None, now: datetime
) -> bool:
    goal = parsed_goal(document)
    return goal is not None and contact is not None and conditions.matches(goal, contact, now)


def advance(document: defs.WorkflowDocument, run: Run, trigger: Trigger, ctx: Context) -> Advance:
    """Run steps until the run waits, retries or ends; `run` is updated in place."""
    records: list[StepRecord] = []
    effects: list[Effect] = []
    step_id = run.step
    if isinstance(trigger, TimerFired | EventArrived):
        if step_id != trigger.step:
            return Advance("waiting", step_id)  # a stale timer or event: the run moved on
        step = document.step(trigger.step)
        outcome, step_id = _resume(step, trigger, ctx.now)
        run.seq += 1
        records.append(
            StepRecord(step.id, step.type, outcome, ctx.now, run.seq, _event_detail(trigger))
        )
        run.outcomes[step.id] = outcome
    for _ in range(MAX_STEPS_PER_ADVANCE):
        if goal_met(document, ctx.contact, ctx.now):
            run.step = None
            return Advance("goal_met", None, records, effects)
        if step_id is None:
            run.step = None
            return Advance("completed", None, records, effects)
        run.step = step_id
        step = document.step(step_id)
        run.seq += 1
        try:
            result = _execute(document, step, run, ctx, effects)
        except StepFailure as exc:
            run.attempt += 1
            records.append(
                StepRecord(
                    step.id,
                    step.type,
                    "error",
                    ctx.now,
                    run.seq,
                    {"attempt": run.attempt},
                    str(exc),
                )
            )
            if run.attempt >= ctx.max_attempts:
                return Advance("failed", step.id, records, effects, error=str(exc))
            delay = timedelta(seconds=ctx.retry_base_s * 2 ** (run.attempt - 1))
            return Advance(
                "active", step.id, records, effects, wait_until=ctx.now + delay, retrying=True
            )
        run.attempt = 0
        if isinstance(result, Wait):
            records.append(
                StepRecord(step.id, step.type, "waiting", ctx.now, run.seq, result.detail)
            )
            return Advance("waiting", step.id, records, effects, result.until, result.event)
        outcome, step_id, detail = result
        records.append(StepRecord(step.id, step.type, outcome, ctx.now, run.seq, detail))
        run.outcomes[step.id] = outcome
        if step.type == "end":
            run.step = None
            return Advance("completed", None, records, effects)
    # Validation refuses loops without a wait, so this only guards against a bug.
    return Advance("failed", step_id, records, effects, error="too many steps without a wait")


@dataclass(frozen=True)
class Wait:
    until: datetime | None
    event: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _resume(
    step: defs.Step, trigger: TimerFired | EventArrived, now: datetime
) -> tuple[str, str | None]:
    if type(step) is defs.WaitForEventStep:
        if isinstance(trigger, EventArrived):
            return "event", step.on_event or step.next
        return "timeout", step.on_timeout or step.next
    return "elapsed", step.next


def _event_detail(trigger: Trigger) -> dict[str, Any]:
    if isinstance(trigger, EventArrived):
        return {"event": trigger.event_type}
    return {}


def _execute(
    document: defs.WorkflowDocument,
    step: defs.Step,
    run: Run,
    ctx: Context,
    effects: list[Effect],
) -> Wait | tuple[str, str | None, dict[str, Any]]:
    # Steps are told apart by `type(step) is`: pydantic models are ABCs, and `isinstance`
    # against one takes abc's slow path (dozens per run per step added up). Every step class
    # is a leaf (no step subclasses another), so the two tests agree.
    now, contact = ctx.now, ctx.contact or {}
    # Only a window step names its own zone (`getattr` with a default on a pydantic model that
    # lacks the field takes its slow `__getattr__` and an exception, a tenth of a run's CPU).
    own = step.timezone if type(step) is defs.WaitForWindowStep else None
    zone = zone_of(own or document.timezone or ctx.timezone)
    if type(step) is defs.WaitStep:
        until = now + step.duration.delta
        return Wait(until, detail={"until": until.isoformat()})
    if type(step) is defs.WaitUntilDateStep:
        date_due = date_offset(contact, step.field, step.offset.delta, step.at, zone)
        if date_due is None:
            return "missing", step.on_missing or step.next, {}
        if date_due <= now:
            return "passed", step.next, {"until": date_due.isoformat()}
        return Wait(date_due, detail={"until": date_due.isoformat()})
    if type(step) is defs.WaitForWindowStep:
        until = next_window_start(now, step.days, step.start, step.end, zone)
        if until <= now:
            return "in_window", step.next, {}
        return Wait(until, detail={"until": until.isoformat()})
    if type(step) is defs.WaitForEventStep:
        until = now + step.timeout.delta
        return Wait(until, step.event, {"event": step.event, "timeout_at": until.isoformat()})
    if type(step) is defs.IfStep:
        condition = step.compiled(
            "condition", step.condition, "contact", frozenset(document_ids(document))
        )
        taken = condition is not None and conditions.matches(condition, contact, now, run.outcomes)
        return ("then", step.then, {}) if taken else ("else", step.otherwise, {})
    if type(step) is defs.SplitStep:
        bucket = split_bucket(run.enrollment_id, step.id)
        edge = 0
        for branch in step.branches:
            edge += branch.percent
            if bucket < edge:
                return branch.name, branch.next, {"bucket": bucket}
        last = step.branches[-1]
        return last.name, last.next, {"bucket": bucket}
    if type(step) is defs.EndStep:
        return "ended", None, {}
    if type(step) is defs.AssignOwnerStep and step.keep_existing and contact.get("owner_id"):
        return "kept", step.on_kept or step.next, {"owner_id": contact["owner_id"]}
    action, detail = _action(document, step, run, ctx, zone)
    effects.append(Effect(step.id, effect_key(run, step.id), action))
    return "done", step.next, detail


def document_ids(document: defs.WorkflowDocument) -> list[str]:
    return [s.id for s in document.steps]


def split_bucket(enrollment_id: str, step_id: str) -> int:
    """0-99, stable for a run and a step: a replayed or dry run takes the same branch."""
    digest = hashlib.sha256(f"{enrollment_id}:{step_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _action(
    document: defs.WorkflowDocument,
    step: defs.Step,
    run: Run,
    ctx: Context,
    zone: tzinfo,
) -> tuple[Action, dict[str, Any]]:
    contact = ctx.contact or {}
    built: list[dict[str, Any]] = []

    def variables() -> dict[str, Any]:
        # Built on the first template rendered: most actions (tags, lists) render none.
        if not built:
            workflow = {"id": run.workflow_id, "version": run.version, "name": document.name}
            built.append(templates.context_of(dict(contact), workflow, {}))
        return built[0]

    def render(source: str | None) -> str | None:
        if source is None:
            return None
        try:
            return templates.render(source, variables())
        except templates.RenderError as exc:
            raise StepFailure(f"{step.id}: {exc}") from exc

    cid = run.contact_id
    requested_by = f"workflow:{run.workflow_id}:v{run.version}"
    key = effect_key(run, step.id)
    if type(step) is defs.SendEmailStep:
        content = {
            k: v
            for k, v in (("subject", render(step.subject)), ("text", render(step.body)))
            if v is not None
        }
        payload = _notification(
            key, cid, step.channel, step.template, content, step.to, requested_by, step.purpose
        )
        return Notify(payload), {
            "channel": step.channel,
            "to": step.to or "contact",
            "content": content,
        }
    if type(step) is defs.SendSlackStep:
        content = {"text": render(step.text) or ""}
        payload = _notification(
            key, cid, step.channel, step.template, content, None, requested_by, "transactional"
        )
        return Notify(payload), {"channel": step.channel, "content": content}
    if type(step) is defs.SendWebhookStep:
        try:
            body = templates.render_value(step.payload, variables())
        except templates.RenderError as exc:
            raise StepFailure(f"{step.id}: {exc}") from exc
        payload = _notification(
            key, cid, step.channel, None, {"json": body}, None, requested_by, "transactional"
        )
        return Notify(payload), {"channel": step.channel, "content": {"json": body}}
    if type(step) is defs.TagStep:
        return Command(f"contact.{step.type}", {"contact_id": cid, "tag": step.tag}), {
            "tag": step.tag
        }
    if type(step) is defs.ListStep:
        return Command(f"contact.{step.type}", {"contact_id": cid, "list": step.list}), {
            "list": step.list
        }
    if type(step) is defs.SetFieldStep:
        try:
            value = templates.render_value(step.value, variables())
        except templates.RenderError as exc:
            raise StepFailure(f"{step.id}: {exc}") from exc
        name = step.field
        return Command("contact.set_field", {"contact_id": cid, "field": name, "value": value}), {
            "field": name,
            "value": value,
        }
    if type(step) is defs.SetLifecycleStep:
        payload = {"contact_id": cid, "stage": step.stage}
        if step.churn_reason:
            payload["churn_reason"] = step.churn_reason
        if step.churn_reason_text:
            payload["churn_reason_text"] = render(step.churn_reason_text) or ""
        return Command("contact.set_lifecycle", payload), {
            "stage": step.stage,
            "churn_reason": step.churn_reason,
        }
    if type(step) is defs.AssignOwnerStep:
        payload = {"contact_id": cid}
        payload |= {"owner_id": step.owner_id} if step.owner_id else {"team_id": step.team_id or ""}
        return Command("contact.assign_owner", payload), {
            k: v for k, v in payload.items() if k != "contact_id"
        }
    if type(step) is defs.CreateTaskStep:
        title = render(step.title) or step.title
        payload = {"contact_id": cid, "title": title}
        if step.description:
            payload["description"] = render(step.description) or ""
        if step.due_in_days is not None:
            payload["due_date"] = (
                ctx.now.astimezone(zone).date() + timedelta(days=step.due_in_days)
            ).isoformat()
        assignee = contact.get("owner_id") if step.assignee == "owner" else step.assignee
        if assignee:
            payload["assignee_id"] = assignee
        return Command("contact.create_task", payload), {
            k: v for k, v in payload.items() if k != "contact_id"
        }
    if type(step) is defs.EnrollStep:
        if step.workflow_id not in ctx.enabled_workflows:
            raise StepFailure(f"{step.id}: workflow {step.workflow_id} is not enabled")
        return Enroll(step.workflow_id), {"workflow_id": step.workflow_id}
    raise StepFailure(f"{step.id}: unsupported step type {step.type}")


def _notification(
    key: str,
    contact_id: str,
    channel: str,
    template: str | None,
    content: dict[str, Any],
    recipient: str | None,
    requested_by: str,
    purpose: str,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "idempotency_key": key,
        "contact_id": contact_id,
        "channel": channel,
        "content": content,
        "purpose": purpose,
        "requested_by": requested_by,
    }
    if template is not None:
        payload["template"] = template
    if recipient is not None:
        payload["recipient"] = recipient
    return payload


# --- time -----------------------------------------------------------------------------------


def zone_of(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return UTC


def local_instant(day: date, at: Any, zone: tzinfo) -> datetime:
    """`day` at wall-clock time `at` in `zone`, as UTC. A time skipped by a daylight-saving
    jump (02:30 on a spring-forward night) is the instant it would have been, i.e. after the
    jump; a repeated time (an autumn night) is its first occurrence."""
    # fold=0 reads a skipped time with the offset from before the jump, which lands after it:
    # the intended "as soon as that time has passed".
    local = datetime(day.year, day.month, day.day, at.hour, at.minute, at.second, tzinfo=zone)
    return local.astimezone(UTC)


def next_window_start(
    now: datetime, days: Sequence[str], start: Any, end: Any, zone: tzinfo
) -> datetime:
    """`now` when it falls inside the weekly window, else the window's next opening."""
    local = now.astimezone(zone)
    allowed = {WEEKDAY_NUMBERS[d] for d in days}
    for offset in range(0, 8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in allowed:
            continue
        opens = local_instant(day, start, zone)
        closes = local_instant(day, end, zone)
        if offset == 0 and opens <= now < closes:
            return now
        if now < opens:
            return opens
    raise ValueError("a weekly window with at least one day always opens within 8 days")


def date_offset(
    contact: Mapping[str, Any], name: str, offset: timedelta, at: Any, zone: tzinfo
) -> datetime | None:
    """The instant a date field plus an offset names (at a local time of day, if given)."""
    moment = conditions.to_datetime(conditions.lookup(contact, name, {}))
    if moment is None:
        return None
    if at is None:
        return moment + offset
    day = (
        (moment.astimezone(zone) + offset).date()
        if _has_time(contact, name)
        else moment.date() + offset
    )
    return local_instant(day, at, zone)


def _has_time(contact: Mapping[str, Any], name: str) -> bool:
    raw = conditions.lookup(contact, name, {})
    return isinstance(raw, datetime) or (isinstance(raw, str) and "T" in raw)


# --- dry run --------------------------------------------------------------------------------


def dry_run(
    document: defs.WorkflowDocument,
    contact: Mapping[str, Any],
    ctx: Context,
    workflow_id: str,
    version: int,
    events: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The path a run would take and what each action would do, doing nothing.

    Time is skipped: each wait is taken as elapsed at its due time; a wait for an event takes
    its `event` branch when the event is in `events`, else its timeout.
    """
    run = Run(
        "dry-run", workflow_id, version, str(contact.get("id", "dry-run")), document.first_step
    )
    now = ctx.now
    path: list[dict[str, Any]] = []
    trigger: Trigger = Start()
    status: str = "active"
    error = None
    for _ in range(MAX_STEPS_PER_ADVANCE):
        step_ctx = Context(contact, now, ctx.timezone, ctx.enabled_workflows, 1, ctx.retry_base_s)
        result = advance(document, run, trigger, step_ctx)
        by_step = {e.step: e for e in result.effects}
        for record in result.records:
            item: dict[str, Any] = {
                "step": record.step,
                "type": record.step_type,
                "outcome": record.outcome,
                "at": record.at.isoformat(),
                "detail": record.detail,
            }
            if record.error:
                item["error"] = record.error
            effect = by_step.get(record.step)
            if effect is not None and record.outcome == "done":
                item["would"] = describe_action(effect.action)
            path.append(item)
        status, error = result.status, result.error
        if result.status != "waiting" or result.step is None:
            break
        step = document.step(result.step)
        if type(step) is defs.WaitForEventStep and step.event in events:
            trigger = EventArrived(step.id, step.event, {})
        else:
            trigger = TimerFired(step.id)
            now = result.wait_until or now
    return {"status": status, "error": error, "path": path}


def describe_action(action: Action) -> dict[str, Any]:
    if isinstance(action, Command):
        return {"command": action.event_type, **action.payload}
    if isinstance(action, Notify):
        return {"notification": action.payload}
    return {"enroll": action.workflow_id}
