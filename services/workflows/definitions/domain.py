"""Workflow documents: their shape (triggers, steps, goal, re-enrollment), parsed by pydantic.
The checks that refuse a bad document with the path of every error are in `validation`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from services.workflows.conditions import domain as conditions
from shared.api_types import RequestTime, StrictBool, StrictFloat, StrictInt

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
    """An explicit owner, or a team whose round-robin or weighted rule picks one. With
    `keep_existing`, a contact that already has an owner (assigned at capture, by hand) keeps
    them: no command is sent and the run goes on at once, to `on_kept` (else `next`)."""

    type: Literal["assign_owner"]
    owner_id: str | None = None
    team_id: str | None = None
    keep_existing: StrictBool = False
    on_kept: str | None = None

    def targets(self) -> Iterator[tuple[str, str]]:
        yield from super().targets()
        if self.on_kept is not None:
            yield "on_kept", self.on_kept

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
