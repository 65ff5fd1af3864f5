"""Run progress published by workflows on `leadwire.workflow-runs.v1`. Public contracts: add
optional fields only. Keyed by `workspace:contact_id`."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from shared.events.envelope import EventPayload

RunStatus = Literal["active", "waiting", "completed", "goal_met", "exited", "failed"]


class RunEvent(EventPayload):
    """Base of run events: which enrollment of which workflow version, for which contact."""

    event_type: ClassVar[str] = "workflow.run"

    enrollment_id: str
    workflow_id: str
    workflow_version: int
    contact_id: str


class ContactEnrolled(RunEvent):
    """Emitted when a contact enters a workflow (by its trigger, the API or another workflow)."""

    event_type: ClassVar[str] = "workflow.enrolled"

    trigger: str  # the trigger kind or `manual`


class StepCompleted(RunEvent):
    """Emitted when a step of a run finished, with its outcome (e.g. the branch taken)."""

    event_type: ClassVar[str] = "workflow.step_completed"

    step_id: str
    step_type: str
    outcome: str = "done"
    detail: dict[str, Any] = Field(default_factory=dict)


class RunWaiting(RunEvent):
    """Emitted when a run parks on a wait step until a time or an event."""

    event_type: ClassVar[str] = "workflow.waiting"

    step_id: str
    until: str | None = None  # RFC 3339 instant, when the wait has a due time
    for_event: str | None = None  # the event type awaited, when waiting for one


class RunEnded(RunEvent):
    """Emitted when a run ends: completed, goal met, exited (unenrolled/erased) or failed."""

    event_type: ClassVar[str] = "workflow.ended"

    status: RunStatus
    reason: str | None = None


RUN_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls for cls in (ContactEnrolled, StepCompleted, RunWaiting, RunEnded)
}
