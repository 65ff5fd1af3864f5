"""The trigger index: a fact is checked only against the workflows that could match it, and
finds exactly the workflows a check of every enabled workflow finds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.workflows.definitions.validation import parse_document
from services.workflows.triggers import domain
from services.workflows.triggers.domain import Enabled, Fact, TriggerIndex

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STEPS = [{"id": "end", "type": "end"}]

TRIGGERS: list[dict[str, Any]] = [
    {"type": "contact_created"},
    {"type": "contact_created", "conditions": {"field": "source", "op": "eq", "value": "form-a"}},
    {"type": "contact_created", "conditions": {"field": "source", "op": "eq", "value": "form-b"}},
    {
        "type": "contact_created",
        "conditions": {
            "and": [
                {"field": "lifecycle_stage", "op": "eq", "value": "lead"},
                {"field": "country", "op": "eq", "value": "FR"},
            ]
        },
    },
    {
        "type": "contact_created",
        "conditions": {
            "or": [
                {"field": "source", "op": "eq", "value": "form-a"},
                {"field": "country", "op": "eq", "value": "DE"},
            ]
        },
    },
    {"type": "contact_created", "conditions": {"field": "score", "op": "gte", "value": 10}},
    {
        "type": "contact_created",
        "conditions": {"field": "custom_fields.plan", "op": "eq", "value": "pro"},
    },
    {"type": "tag_added", "tag": " VIP "},
    {"type": "tag_added", "tag": "trial"},
    {"type": "tag_removed", "tag": "vip"},
    {"type": "list_joined", "list": "Newsletter"},
    {"type": "field_changed", "field": "country", "to": "FR"},
    {"type": "field_changed", "field": "company"},
    {"type": "lifecycle_changed", "to": "customer"},
    {"type": "lifecycle_changed", "from": "lead"},
    {"type": "form_submitted", "form_id": "frm_1"},
    {"type": "form_submitted"},
    {"type": "engagement", "event": "page.viewed"},
    {"type": "segment_entered", "segment_id": "seg_1"},
    {"type": "task_completed", "title_contains": "call"},
]


def enabled() -> list[Enabled]:
    return [
        (f"wf_{i}", 1, parse_document({"name": f"W{i}", "trigger": t, "steps": STEPS}))
        for i, t in enumerate(TRIGGERS)
    ]


def contact(**fields: Any) -> dict[str, Any]:
    return {"id": "c1", "lifecycle_stage": "lead", **fields}


FACTS: list[tuple[Fact, dict[str, Any]]] = [
    (Fact("contact_created", "c1", {"contact": contact(source="form-a")}), {}),
    (Fact("contact_created", "c1", {"contact": contact(source="form-b", country="FR")}), {}),
    (Fact("contact_created", "c1", {"contact": contact(country="DE", score=12)}), {}),
    (Fact("contact_created", "c1", {"contact": contact(source=True, tags=["x"])}), {}),
    (Fact("contact_created", "c1", {"contact": contact(custom_fields={"plan": "pro"})}), {}),
    (Fact("tag_added", "c1", {"tag": "vip"}), {}),
    (Fact("tag_added", "c1", {"tag": "Trial"}), {}),
    (Fact("tag_removed", "c1", {"tag": "VIP"}), {}),
    (Fact("list_joined", "c1", {"list": "newsletter"}), {}),
    (Fact("field_changed", "c1", {"field": "country", "from": "DE", "to": "fr"}), {}),
    (Fact("field_changed", "c1", {"field": "company", "from": None, "to": "Acme"}), {}),
    (Fact("lifecycle_changed", "c1", {"from": "lead", "to": "customer"}), {}),
    (Fact("lifecycle_changed", "c1", {"from": "mql", "to": "sql"}), {}),
    (Fact("form_submitted", "c1", {"form_id": "frm_1"}), {}),
    (Fact("form_submitted", "c1", {"form_id": "frm_2"}), {}),
    (Fact("engagement", "c1", {"type": "page.viewed", "url": "/x"}), {}),
    (Fact("engagement", "c1", {"type": "email.opened"}), {}),
    (Fact("segment_entered", "c1", {"segment_id": "seg_1"}), {}),
    (Fact("task_completed", "c1", {"title": "Call Ada"}), {}),
]


def every(items: list[Enabled], fact: Fact, record: dict[str, Any]) -> list[str]:
    return [wf for wf, _, doc in items if domain.fact_matches(doc.trigger, fact, record, NOW)]


class TestTriggerIndex:
    def test_finds_what_checking_every_workflow_finds(self) -> None:
        items = enabled()
        index = TriggerIndex(items)
        for fact, record in FACTS:
            found = [wf for wf, _, _ in index.matching(fact, record, NOW)]
            assert found == every(items, fact, record), fact

    def test_checks_only_the_workflows_filed_under_the_facts_values(self) -> None:
        items = [
            (
                f"wf_{i}",
                1,
                parse_document(
                    {
                        "name": f"W{i}",
                        "trigger": {
                            "type": "contact_created",
                            "conditions": {"field": "source", "op": "eq", "value": f"c-{i}"},
                        },
                        "steps": STEPS,
                    }
                ),
            )
            for i in range(100)
        ]
        index = TriggerIndex(items)
        fact = Fact("contact_created", "c1", {"contact": contact(source="c-42")})
        assert [wf for wf, _, _ in index.candidates(fact, None)] == ["wf_42"]
        assert [wf for wf, _, _ in index.matching(fact, None, NOW)] == ["wf_42"]
        other = Fact("contact_created", "c1", {"contact": contact(source="elsewhere")})
        assert index.candidates(other, None) == []

    def test_a_trigger_without_one_value_is_checked_against_every_fact_of_its_kind(
        self,
    ) -> None:
        index = TriggerIndex(enabled())
        fact = Fact("contact_created", "c1", {"contact": contact()})
        names = {wf for wf, _, _ in index.candidates(fact, None)}
        # no condition, an `or`, a number comparison: not filed under a value
        assert {"wf_0", "wf_4", "wf_5"} <= names
        assert not {"wf_1", "wf_2"} & names
