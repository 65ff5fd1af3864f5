"""Saving a workflow: every error is refused with its path."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflows.definitions.validation import InvalidDocument, parse_document


def doc(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "W", "trigger": {"type": "contact_created"}, "steps": steps, **extra}


def errors_of(raw: Any, known: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with pytest.raises(InvalidDocument) as caught:
        parse_document(raw, known)
    return caught.value.errors


class TestValidWorkflows:
    def test_a_drip_with_every_kind_of_step_is_accepted(self) -> None:
        document = parse_document(
            doc(
                [
                    {
                        "id": "hello",
                        "type": "send_email",
                        "subject": "Hi {{ contact.first_name | default('there') }}",
                        "next": "w",
                    },
                    {
                        "id": "w",
                        "type": "wait_for_event",
                        "event": "email.opened",
                        "timeout": {"days": 3},
                        "on_event": "tag",
                        "on_timeout": "check",
                    },
                    {
                        "id": "check",
                        "type": "if",
                        "condition": {"field": "run.w", "op": "eq", "value": "timeout"},
                        "then": "split",
                        "else": "tag",
                    },
                    {
                        "id": "split",
                        "type": "split",
                        "branches": [
                            {"name": "a", "percent": 50, "next": "task"},
                            {"name": "b", "percent": 50, "next": "tag"},
                        ],
                    },
                    {
                        "id": "task",
                        "type": "create_task",
                        "title": "Call {{ contact.email }}",
                        "due_in_days": 2,
                        "next": "tag",
                    },
                    {"id": "tag", "type": "add_tag", "tag": "nurtured", "next": "window"},
                    {
                        "id": "window",
                        "type": "wait_for_window",
                        "days": ["mon"],
                        "start": "09:00",
                        "end": "17:00",
                        "timezone": "Europe/Paris",
                        "next": "owner",
                    },
                    {"id": "owner", "type": "assign_owner", "team_id": "team_1", "next": "life"},
                    {
                        "id": "life",
                        "type": "set_lifecycle",
                        "stage": "churned",
                        "churn_reason": "budget",
                        "next": "end",
                    },
                    {"id": "end", "type": "end"},
                ],
                goal={"field": "lifecycle_stage", "op": "eq", "value": "customer"},
                reenrollment={"policy": "after_days", "days": 30},
            )
        )
        assert document.first_step == "hello"

    def test_yaml_style_aliases_from_and_to_and_else(self) -> None:
        document = parse_document(
            {
                "name": "W",
                "trigger": {"type": "lifecycle_changed", "from": "lead", "to": "mql"},
                "steps": [
                    {
                        "id": "a",
                        "type": "if",
                        "condition": {"field": "score", "op": "gt", "value": 5},
                        "else": "b",
                    },
                    {"id": "b", "type": "end"},
                ],
            }
        )
        assert document.trigger.type == "lifecycle_changed"


class TestRefusedWorkflows:
    def test_unknown_step_ids_are_named_with_their_path(self) -> None:
        errors = errors_of(doc([{"id": "a", "type": "add_tag", "tag": "x", "next": "nowhere"}]))
        assert {"field": "steps[0].next", "code": "unknown_step"}.items() <= errors[0].items()

    def test_an_unknown_on_kept_step_is_named_with_its_path(self) -> None:
        step = {"id": "a", "type": "assign_owner", "team_id": "t", "keep_existing": True}
        errors = errors_of(doc([step | {"on_kept": "nowhere"}]))
        assert {"field": "steps[0].on_kept", "code": "unknown_step"}.items() <= errors[0].items()

    def test_unreachable_steps(self) -> None:
        errors = errors_of(doc([{"id": "a", "type": "end"}, {"id": "b", "type": "end"}]))
        assert [(e["field"], e["code"]) for e in errors] == [("steps[1]", "unreachable_step")]

    def test_loops_without_a_wait(self) -> None:
        errors = errors_of(
            doc(
                [
                    {"id": "a", "type": "add_tag", "tag": "x", "next": "b"},
                    {"id": "b", "type": "remove_tag", "tag": "x", "next": "a"},
                ]
            )
        )
        assert {(e["field"], e["code"]) for e in errors} == {
            ("steps[0]", "loop_without_wait"),
            ("steps[1]", "loop_without_wait"),
        }

    def test_a_loop_through_a_wait_is_fine(self) -> None:
        parse_document(
            doc(
                [
                    {"id": "a", "type": "add_tag", "tag": "x", "next": "w"},
                    {"id": "w", "type": "wait", "duration": {"days": 7}, "next": "a"},
                ]
            )
        )

    def test_templates_that_do_not_parse(self) -> None:
        errors = errors_of(
            doc(
                [
                    {
                        "id": "a",
                        "type": "send_slack",
                        "channel": "#sales",
                        "text": "Hi {{ contact.name",
                    }
                ]
            )
        )
        assert errors[0]["field"] == "steps[0].text"
        assert errors[0]["code"] == "invalid_template"

    def test_fields_that_do_not_exist(self) -> None:
        errors = errors_of(
            doc(
                [
                    {
                        "id": "a",
                        "type": "if",
                        "condition": {"field": "shoe_size", "op": "eq", "value": "9"},
                        "then": "b",
                    },
                    {"id": "b", "type": "set_field", "field": "created_at", "value": "x"},
                ],
                goal={"and": [{"field": "lifecycle_stage", "op": "eq", "value": "emperor"}]},
            )
        )
        found = {(e["field"], e["code"]) for e in errors}
        assert ("steps[0].condition.field", "unknown_field") in found
        assert ("steps[1].field", "unknown_field") in found
        assert ("goal.and[0].value", "invalid_value") in found

    def test_structural_errors_carry_pydantic_paths(self) -> None:
        errors = errors_of(doc([{"id": "a", "type": "wait", "duration": {"days": -1}}]))
        assert errors[0]["field"] == "steps[0].duration.days"

    def test_enroll_into_an_unknown_workflow(self) -> None:
        errors = errors_of(
            doc([{"id": "a", "type": "enroll", "workflow_id": "wf_nope"}]), ("wf_other",)
        )
        assert errors[0]["field"] == "steps[0].workflow_id"

    def test_every_error_is_listed_at_once(self) -> None:
        errors = errors_of(
            doc(
                [
                    {
                        "id": "a",
                        "type": "send_slack",
                        "channel": "c",
                        "text": "{% if %}",
                        "next": "b",
                    },
                    {
                        "id": "b",
                        "type": "wait_for_window",
                        "timezone": "Mars/Olympus",
                        "start": "18:00",
                        "end": "09:00",
                    },
                ],
                timezone="Nowhere/City",
            )
        )
        assert {e["field"] for e in errors} == {
            "timezone",
            "steps[0].text",
            "steps[1].timezone",
            "steps[1].end",
        }
