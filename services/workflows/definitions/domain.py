"""Workflow documents: their shape, and the checks that refuse a bad one with the path of
every error. Pure: a document is validated from itself and the ids it may refer to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from services.workflows.conditions import domain as conditions
from services.workflows.templates import domain as templates
from shared.api_types import RequestTime, StrictFloat, StrictInt

STEP_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WORKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
Errors = list[dict[str, str]]


class Strict(BaseModel):
    # Unknown keys are refused, and numbers and times are typed strictly (StrictInt,
    # RequestTime): a document is the request schema of the definitions API.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # Conditions parsed once per saved document (versions never change), not per event.
    _filters: dict[str, conditions.Filter | None] = PrivateAttr(default_factory=dict)

    def compiled(
        self, name: str, raw: Any, scope: conditions.Scope, steps: frozenset[str] = frozenset()
    ) -> conditions.Filter | None:
        """The parsed form of one of this object's condition fields (None when absent)."""
        if name not in self._filters:
            self._filters[name] = (
                None if raw is None else conditions.parse(raw, name, scope, [], steps)
            )
        return self._filters[name]


class Duration(Strict):
    """A length of time; at least one part is set."""

    days: StrictInt = Field(0, ge=0, le=3650)
    hours: StrictInt = Field(0, ge=0, le=100_000)
    minutes: StrictInt = Field(0, ge=0, le=1_000_000)
    seconds: StrictFloat = Field(0, ge=0, le=100_000_000)

    @property
    def delta(self) -> timedelta:
        return timedelta(
            days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )

    @model_validator(mode="after")
    def _positive(self) -> Duration:
        if self.delta <= timedelta(0):
            raise ValueError("a duration is longer than zero")
        return self


class Offset(Strict):
    """A signed shift from a date: `{"days": -30}` is 30 days before."""

    days: StrictInt = Field(0, ge=-3650, le=3650)
    hours: StrictInt = Field(0, ge=-100_000, le=100_000)

    @property
    def delta(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours)


# --- triggers -------------------------------------------------------------------------------


class ContactCreatedTrigger(Strict):
    """A contact was created; `conditions` on the new contact (e.g. source is form X)."""

    type: Literal["contact_created"]
    conditions: dict[str, Any] | None = None


class FieldChangedTrigger(Strict):
    """A field changed, optionally from one value and/or to another."""

    type: Literal["field_changed"]
    field: str
    from_value: Any = Field(None, alias="from")
    to_value: Any = Field(None, alias="to")


class TagTrigger(Strict):
    type: Literal["tag_added", "tag_removed"]
    tag: str = Field(min_length=1, max_length=100)


class ListTrigger(Strict):
    type: Literal["list_joined", "list_left"]
    list: str = Field(min_length=1, max_length=200)


class LifecycleTrigger(Strict):
    type: Literal["lifecycle_changed"]
    from_stage: str | None = Field(None, alias="from")
    to_stage: str | None = Field(None, alias="to")


class FormSubmittedTrigger(Strict):
    """A lead was captured from a form (any form, or the one named)."""

    type: Literal["form_submitted"]
    form_id: str | None = None


class EngagementTrigger(Strict):
    """An engagement event (`page.viewed`, `email.opened`, …) with conditions on its data."""

    type: Literal["engagement"]
    event: str = Field(min_length=1, max_length=100)
    conditions: dict[str, Any] | None = None


class ScoreThresholdTrigger(Strict):
    type: Literal["score_threshold_crossed"]
    threshold: str | None = None
    group: str | None = None
    direction: Literal["up", "down"] = "up"


class ChurnRiskTrigger(Strict):
    type: Literal["churn_risk_changed"]
    band: Literal["low", "medium", "high"] | None = None
    segment: str | None = None


class SegmentTrigger(Strict):
    type: Literal["segment_entered", "segment_exited"]
    segment_id: str = Field(min_length=1, max_length=64)


class TaskCompletedTrigger(Strict):
    type: Literal["task_completed"]
    title_contains: str | None = None


class DateRelativeTrigger(Strict):
    """N days before or after a contact's date field, at a local time of day."""

    type: Literal["date_relative"]
    field: str
    offset: Offset = Field(default_factory=Offset)
    at: RequestTime | None = None


class InactivityTrigger(Strict):
    """No interaction (engagement or capture) for `days` days."""

    type: Literal["inactivity"]
    days: StrictInt = Field(ge=1, le=3650)


class ManualTrigger(Strict):
    """Enrolled only over the API or by another workflow."""

    type: Literal["manual"]


Trigger = Annotated[
    ContactCreatedTrigger
    | FieldChangedTrigger
    | TagTrigger
    | ListTrigger
    | LifecycleTrigger
    | FormSubmittedTrigger
    | EngagementTrigger
    | ScoreThresholdTrigger
    | ChurnRiskTrigger
    | SegmentTrigger
    | TaskCompletedTrigger
    | DateRelativeTrigger
    | InactivityTrigger
    | ManualTrigger,
    Field(discriminator="type"),
]


# --- steps ----------------------------------------------------------------------------------


class StepBase(Strict):
    id: str = Field(pattern=STEP_ID)
    name: str | None = None
    next: str | None = None  # the step after this one; None ends the run

    def targets(self) -> Iterator[tuple[str, str]]:
        """(path within the step, step id) of every step this one can lead to."""
        if self.next is not None:
            yield "next", self.next


class WaitStep(StepBase):
    type: Literal["wait"]
    duration: Duration


class WaitUntilDateStep(StepBase):
    """Until a contact date field plus an offset (at a local time); `on_missing` if unset."""

    type: Literal["wait_until_date"]
    field: str
    offset: Offset = Field(default_factory=Offset)
    at: RequestTime | None = None
    on_missing: str | None = None

    def targets(self) -> Iterator[tuple[str, str]]:
        yield from super().targets()
        if self.on_missing is not None:
            yield "on_missing", self.on_missing


class WaitForWindowStep(StepBase):
    """Until the next moment inside a weekly window in the workspace's time zone."""

    type: Literal["wait_for_window"]
    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS))
    start: RequestTime = time(9)
    end: RequestTime = time(17)
    timezone: str | None = None


class WaitForEventStep(StepBase):
    """Until an event for the contact (`email.opened`, `task.completed`, …) or a timeout."""

    type: Literal["wait_for_event"]
    event: str = Field(min_length=1, max_length=100)
    conditions: dict[str, Any] | None = None
    timeout: Duration
    on_event: str | None = None
    on_timeout: str | None = None

    def targets(self) -> Iterator[tuple[str, str]]:
        yield from super().targets()
        if self.on_event is not None:
            yield "on_event", self.on_event
        if self.on_timeout is not None:
            yield "on_timeout", self.on_timeout


class IfStep(StepBase):
    """Branch on the contact (segment language) and on earlier outcomes (`run.<step>`)."""

    type: Literal["if"]
    condition: dict[str, Any]
    then: str | None = None
    otherwise: str | None = Field(None, alias="else")

    def targets(self) -> Iterator[tuple[str, str]]:
        if self.then is not None:
            yield "then", self.then
        if self.otherwise is not None:
            yield "else", self.otherwise


class SplitBranch(Strict):
    name: str = Field(min_length=1, max_length=60)
    percent: StrictInt = Field(ge=0, le=100)
    next: str | None = None


class SplitStep(StepBase):
    """A percentage split (A/B test): each run goes down one branch, stable per run."""

    type: Literal["split"]
    branches: list[SplitBranch] = Field(min_length=2, max_length=10)

    def targets(self) -> Iterator[tuple[str, str]]:
        for i, branch in enumerate(self.branches):
            if branch.next is not None:
                yield f"branches[{i}].next", branch.next

    @model_validator(mode="after")
    def _hundred(self) -> SplitStep:
        if sum(b.percent for b in self.branches) != 100:
            raise ValueError("branch percentages add up to 100")
        return self


class SendEmailStep(StepBase):
    type: Literal["send_email"]
    channel: str = "email"
    template: str | None = None
    subject: str | None = Field(None, max_length=2000)
    body: str | None = None
    to: str | None = None  # None: the contact; `owner`; or an address
    purpose: Literal["transactional", "marketing"] = "marketing"


class SendSlackStep(StepBase):
    type: Literal["send_slack"]
    channel: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    template: str | None = None


class SendWebhookStep(StepBase):
    type: Literal["send_webhook"]
    channel: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)


class TagStep(StepBase):
    type: Literal["add_tag", "remove_tag"]
    tag: str = Field(min_length=1, max_length=100)


class ListStep(StepBase):
    type: Literal["add_to_list", "remove_from_list"]
    list: str = Field(min_length=1, max_length=200)


class SetFieldStep(StepBase):
    type: Literal["set_field"]
    field: str
    value: Any = None


class SetLifecycleStep(StepBase):
    type: Literal["set_lifecycle"]
    stage: Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "churned"]
    churn_reason: Literal["budget", "missing_feature", "competitor", "service", "other"] | None = (
        None
    )
    churn_reason_text: str | None = None

    @model_validator(mode="after")
    def _reason(self) -> SetLifecycleStep:
        if self.stage == "churned" and self.churn_reason is None:
            raise ValueError("churned needs a churn_reason")
        return self


class AssignOwnerStep(StepBase):
    """An explicit owner, or a team whose round-robin or weighted rule picks one."""

    type: Literal["assign_owner"]
    owner_id: str | None = None
    team_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AssignOwnerStep:
        if (self.owner_id is None) == (self.team_id is None):
            raise ValueError("give exactly one of owner_id and team_id")
        return self


class CreateTaskStep(StepBase):
    type: Literal["create_task"]
    title: str = Field(min_length=1, max_length=500)
    description: str | None = None
    due_in_days: StrictInt | None = Field(None, ge=0, le=3650)
    assignee: str | None = "owner"  # `owner` (the contact's owner), an owner id, or None


class EnrollStep(StepBase):
    type: Literal["enroll"]
    workflow_id: str


class EndStep(StepBase):
    type: Literal["end"]


Step = Annotated[
    WaitStep
    | WaitUntilDateStep
    | WaitForWindowStep
    | WaitForEventStep
    | IfStep
    | SplitStep
    | SendEmailStep
    | SendSlackStep
    | SendWebhookStep
    | TagStep
    | ListStep
    | SetFieldStep
    | SetLifecycleStep
    | AssignOwnerStep
    | CreateTaskStep
    | EnrollStep
    | EndStep,
    Field(discriminator="type"),
]
WAIT_TYPES = frozenset({"wait", "wait_until_date", "wait_for_window", "wait_for_event"})
NOTIFY_TYPES = frozenset({"send_email", "send_slack", "send_webhook"})


class Reenrollment(Strict):
    """May a contact enter again: never, after N days since its last entry, or every time."""

    policy: Literal["never", "after_days", "always"] = "never"
    days: StrictInt | None = Field(None, ge=1, le=3650)

    @model_validator(mode="after")
    def _days(self) -> Reenrollment:
        if (self.policy == "after_days") != (self.days is not None):
            raise ValueError("`days` goes with the after_days policy, and only with it")
        return self


class WorkflowDocument(Strict):
    """What an author writes: a trigger, who may enter, when they leave, and the steps."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    trigger: Trigger
    conditions: dict[str, Any] | None = None  # enrollment conditions on the contact
    reenrollment: Reenrollment = Field(default_factory=Reenrollment)
    exclusion_segment: str | None = None
    goal: dict[str, Any] | None = None  # an exit condition on the contact
    timezone: str | None = None  # None: the workspace's time zone
    start: str | None = None  # the first step; None: the first in the list
    steps: list[Step] = Field(min_length=1, max_length=200)

    @property
    def first_step(self) -> str:
        return self.start or self.steps[0].id

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


# --- validation -----------------------------------------------------------------------------


class InvalidDocument(Exception):
    def __init__(self, errors: Errors) -> None:
        super().__init__(f"{len(errors)} error(s) in the workflow")
        self.errors = errors


def _pydantic_path(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif (part in _STEP_TAGS and isinstance(previous, int)) or (
            part in _TRIGGER_TAGS and previous == "trigger"
        ):
            pass  # the union member's tag pydantic inserts after a step's index or `trigger`
        else:
            parts.append(str(part))
        previous = part
    return ".".join(parts) or "document"


_STEP_TAGS = {
    "wait", "wait_until_date", "wait_for_window", "wait_for_event", "if", "split",
    "send_email", "send_slack", "send_webhook", "add_tag", "remove_tag", "add_to_list",
    "remove_from_list", "set_field", "set_lifecycle", "assign_owner", "create_task",
    "enroll", "end",
}  # fmt: skip
_TRIGGER_TAGS = {
    "contact_created", "field_changed", "tag_added", "tag_removed", "list_joined",
    "list_left", "lifecycle_changed", "form_submitted", "engagement",
    "score_threshold_crossed", "churn_risk_changed", "segment_entered", "segment_exited",
    "task_completed", "date_relative", "inactivity", "manual",
}  # fmt: skip


def parse_document(
    raw: Any, known_workflows: Iterable[str] = (), self_id: str | None = None
) -> WorkflowDocument:
    """A valid document, or InvalidDocument listing every error with its path.

    `known_workflows` are the workspace's workflow ids an `enroll` step may name.
    """
    try:
        document = WorkflowDocument.model_validate(raw)
    except ValidationError as exc:
        raise InvalidDocument(
            [
                {"field": _pydantic_path(e["loc"]), "code": e["type"], "message": e["msg"]}
                for e in exc.errors()
            ]
        ) from exc
    errors = check(document, frozenset(known_workflows) | ({self_id} if self_id else set()))
    if errors:
        raise InvalidDocument(errors)
    return document


def check(document: WorkflowDocument, known_workflows: frozenset[str]) -> Errors:
    """The semantic errors of a well-formed document: references, reachability, loops,
    templates, conditions and fields."""
    errors: Errors = []

    def fail(where: str, code: str, message: str) -> None:
        errors.append({"field": where, "code": code, "message": message})

    index: dict[str, int] = {}
    for i, step in enumerate(document.steps):
        if step.id in index:
            fail(f"steps[{i}].id", "duplicate_step", f"step id {step.id!r} is used twice")
        index.setdefault(step.id, i)
    ids = frozenset(index)
    if document.start is not None and document.start not in ids:
        fail("start", "unknown_step", f"no step {document.start!r}")
    for i, step in enumerate(document.steps):
        for where, target in step.targets():
            if target not in ids:
                fail(f"steps[{i}].{where}", "unknown_step", f"no step {target!r}")
    if errors:
        return errors
    graph = {s.id: [t for _, t in s.targets()] for s in document.steps}
    reachable = _reachable(document.first_step, graph)
    for i, step in enumerate(document.steps):
        if step.id not in reachable:
            fail(f"steps[{i}]", "unreachable_step", f"step {step.id!r} cannot be reached")
    waits = {s.id for s in document.steps if s.type in WAIT_TYPES}
    for cycle_step in _cycles_without_wait(graph, waits):
        fail(
            f"steps[{index[cycle_step]}]",
            "loop_without_wait",
            f"step {cycle_step!r} is on a loop that has no wait step",
        )
    _check_trigger(document, fail)
    for where, raw in (("conditions", document.conditions), ("goal", document.goal)):
        if raw is not None:
            conditions.parse(raw, where, "contact", errors)
    if document.timezone is not None and not valid_zone(document.timezone):
        fail("timezone", "unknown_timezone", f"no time zone {document.timezone!r}")
    for i, step in enumerate(document.steps):
        _check_step(step, f"steps[{i}]", ids, known_workflows, fail, errors)
    return errors


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _reachable(start: str, graph: Mapping[str, list[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _cycles_without_wait(graph: Mapping[str, list[str]], waits: set[str]) -> list[str]:
    """Steps on a cycle none of whose steps waits: such a run would spin without end."""
    # Remove the wait steps; whatever still lies on a cycle loops without waiting.
    edges = {n: [t for t in ts if t not in waits] for n, ts in graph.items() if n not in waits}
    state: dict[str, int] = {}
    on_cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in edges.get(node, ()):
            if state.get(target) == 1:
                for member in stack[stack.index(target) :]:
                    if member not in on_cycle:
                        on_cycle.append(member)
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [])
    return on_cycle


def _check_field(name: str, where: str, fail: Any, writable: bool = False) -> None:
    if writable:
        ok = name in WRITABLE_FIELDS or (
            name.startswith("custom_fields.")
            and conditions.is_identifier(name.removeprefix("custom_fields."))
        )
    else:
        ok = conditions.field_kind(name, "contact", frozenset()) is not None
    if not ok:
        fail(where, "unknown_field", f"no field {name!r}")


def _check_date_field(name: str, where: str, fail: Any) -> None:
    if name in conditions.DATE_FIELDS:
        return
    if name.startswith("custom_fields.") and conditions.is_identifier(
        name.removeprefix("custom_fields.")
    ):
        return
    fail(where, "unknown_field", f"{name!r} is not a date field (a core date or custom_fields.*)")


WRITABLE_FIELDS = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "company",
        "job_title",
        "country",
        "source",
        "owner_id",
        "subscription_status",
        "lifecycle_stage",
    }
)


def _check_trigger(document: WorkflowDocument, fail: Any) -> None:
    trigger = document.trigger
    errors: Errors = []
    if isinstance(trigger, ContactCreatedTrigger) and trigger.conditions is not None:
        conditions.parse(trigger.conditions, "trigger.conditions", "contact", errors)
    if isinstance(trigger, EngagementTrigger) and trigger.conditions is not None:
        conditions.parse(trigger.conditions, "trigger.conditions", "event", errors)
    if isinstance(trigger, FieldChangedTrigger):
        _check_field(trigger.field, "trigger.field", fail)
    if isinstance(trigger, DateRelativeTrigger):
        _check_date_field(trigger.field, "trigger.field", fail)
    if isinstance(trigger, LifecycleTrigger):
        for where, stage in (("from", trigger.from_stage), ("to", trigger.to_stage)):
            if stage is not None and stage not in conditions.LIFECYCLE_STAGES:
                fail(f"trigger.{where}", "invalid_stage", f"one of {conditions.LIFECYCLE_STAGES}")
    for error in errors:
        fail(error["field"], error["code"], error["message"])


def _check_step(
    step: Step,
    path: str,
    ids: frozenset[str],
    known_workflows: frozenset[str],
    fail: Any,
    errors: Errors,
) -> None:
    for where, source in _templates_of(step):
        problem = templates.syntax_error(source)
        if problem:
            fail(f"{path}.{where}", "invalid_template", problem)
    if isinstance(step, IfStep):
        conditions.parse(step.condition, f"{path}.condition", "contact", errors, ids)
    elif isinstance(step, WaitForEventStep) and step.conditions is not None:
        conditions.parse(step.conditions, f"{path}.conditions", "event", errors)
    elif isinstance(step, WaitUntilDateStep):
        _check_date_field(step.field, f"{path}.field", fail)
    elif isinstance(step, WaitForWindowStep):
        if step.timezone is not None and not valid_zone(step.timezone):
            fail(f"{path}.timezone", "unknown_timezone", f"no time zone {step.timezone!r}")
        if step.start >= step.end:
            fail(f"{path}.end", "empty_window", "the window ends after it starts")
        if not step.days:
            fail(f"{path}.days", "empty_window", "at least one day")
    elif isinstance(step, SetFieldStep):
        _check_field(step.field, f"{path}.field", fail, writable=True)
    elif isinstance(step, EnrollStep) and step.workflow_id not in known_workflows:
        fail(f"{path}.workflow_id", "unknown_workflow", f"no workflow {step.workflow_id!r}")


def _templates_of(step: Step) -> list[tuple[str, str]]:
    if isinstance(step, SendEmailStep):
        return [(n, v) for n, v in (("subject", step.subject), ("body", step.body)) if v]
    if isinstance(step, SendSlackStep):
        return [("text", step.text)]
    if isinstance(step, SendWebhookStep):
        return templates.strings_in(step.payload, "payload")
    if isinstance(step, CreateTaskStep):
        return [(n, v) for n, v in (("title", step.title), ("description", step.description)) if v]
    if isinstance(step, SetFieldStep):
        return templates.strings_in(step.value, "value")
    return []


def summary_of(document: WorkflowDocument) -> str:
    """`trigger → n steps`, for listings."""
    return f"{document.trigger.type} → {len(document.steps)} steps"


_SLUG = re.compile(r"[^a-z0-9]+")
