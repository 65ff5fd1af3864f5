"""Validation of workflow documents: a document that parses is checked for what its shape
cannot say (unknown step ids, unreachable steps, loops without a wait, templates that do not
parse, fields that do not exist), and refused with the path of every error. Pure: a document is
validated from itself and the ids it may refer to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from services.workflows.conditions import domain as conditions
from services.workflows.definitions.domain import (
    WAIT_TYPES,
    ContactCreatedTrigger,
    CreateTaskStep,
    DateRelativeTrigger,
    EngagementTrigger,
    EnrollStep,
    Errors,
    FieldChangedTrigger,
    IfStep,
    LifecycleTrigger,
    SendEmailStep,
    SendSlackStep,
    SendWebhookStep,
    SetFieldStep,
    Step,
    WaitForEventStep,
    WaitForWindowStep,
    WaitUntilDateStep,
    WorkflowDocument,
)
from services.workflows.templates import domain as templates


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
