"""The rule language: validation names every error's path; each rule kind matches as written."""

from __future__ import annotations

from typing import Any

import pytest

from services.scoring.rules.domain import (
    DEFAULT_RULE_SET,
    InvalidRuleSet,
    RuleSet,
    default_rule_set,
    parse_rule_set,
)


def paths(raw: Any) -> dict[str, str]:
    with pytest.raises(InvalidRuleSet) as caught:
        parse_rule_set(raw)
    return {p.path: p.code for p in caught.value.problems}


class TestValidation:
    def test_default_rule_set_is_valid(self) -> None:
        rules = default_rule_set()
        assert rules.version == 0
        assert [t.name for t in rules.thresholds("overall")] == ["mql", "sql"]

    def test_unknown_event_type_names_its_path(self) -> None:
        raw = {"rules": [{"id": "x", "kind": "engagement", "event": "page.licked", "points": 1}]}
        assert paths(raw) == {"rules.0.event": "unknown_event"}

    def test_condition_on_a_field_that_does_not_exist(self) -> None:
        raw = {
            "rules": [
                {
                    "id": "a",
                    "kind": "engagement",
                    "event": "page.viewed",
                    "when": [{"field": "urll", "op": "contains", "value": "/x"}],
                    "points": 1,
                },
                {
                    "id": "b",
                    "kind": "fit",
                    "when": [{"field": "shoe_size", "op": "gte", "value": 40}],
                    "points": 1,
                },
            ]
        }
        assert paths(raw) == {
            "rules.0.when.0.field": "unknown_field",
            "rules.1.when.0.field": "unknown_field",
        }

    def test_negative_half_life(self) -> None:
        assert paths({"groups": [{"name": "overall", "half_life_days": -3}]}) == {
            "groups.0.half_life_days": "greater_than"
        }

    def test_thresholds_out_of_order(self) -> None:
        raw = {"thresholds": [{"name": "sql", "at": 80}, {"name": "mql", "at": 50}]}
        assert paths(raw) == {"thresholds.1.at": "out_of_order"}

    def test_every_error_is_reported_at_once(self) -> None:
        raw = {
            "groups": [{"name": "overall"}],
            "thresholds": [{"name": "mql", "group": "nope", "at": 50}],
            "rules": [
                {"id": "f", "kind": "fit", "when": [], "points": -3},
                {
                    "id": "n",
                    "kind": "negative",
                    "event": "page.viewed",
                    "when": [{"field": "country", "op": "in", "value": "DE"}],
                    "points": -1,
                },
                {
                    "id": "e",
                    "kind": "engagement",
                    "event": "email.opened",
                    "points": 1,
                    "group": "other",
                },
            ],
        }
        assert paths(raw) == {
            "thresholds.0.group": "unknown_group",
            "rules.0.points": "not_positive",
            "rules.0.when": "missing",
            "rules.1.event": "unexpected",
            "rules.1.when.0.value": "not_a_list",
            "rules.2.group": "unknown_group",
        }

    def test_schema_errors_carry_paths(self) -> None:
        assert paths({"rules": [{"id": "x", "kind": "sometimes", "points": "many"}]}) == {
            "rules.0.kind": "literal_error",
            "rules.0.points": "float_type",
        }


def rules(*items: dict[str, Any]) -> RuleSet:
    return RuleSet(1, parse_rule_set({"rules": list(items)}))


class TestMatching:
    def test_engagement_rule_with_a_condition(self) -> None:
        r = rules(
            {
                "id": "pricing",
                "kind": "engagement",
                "event": "page.viewed",
                "when": [{"field": "url", "op": "contains", "value": "/pricing"}],
                "points": 10,
            }
        )
        assert [
            x.id for x in r.matching_engagement("page.viewed", {"url": "https://a.io/Pricing/team"})
        ] == ["pricing"]
        assert r.matching_engagement("page.viewed", {"url": "https://a.io/blog"}) == []
        assert r.matching_engagement("email.opened", {"url": "/pricing"}) == []

    def test_engagement_condition_on_a_property(self) -> None:
        r = rules(
            {
                "id": "big",
                "kind": "engagement",
                "event": "content.downloaded",
                "when": [{"field": "properties.asset", "op": "in", "value": ["ebook", "report"]}],
                "points": 5,
            }
        )
        assert r.matching_engagement("content.downloaded", {"properties": {"asset": "Ebook"}})
        assert not r.matching_engagement("content.downloaded", {"properties": {"asset": "video"}})

    def test_fit_rules_on_title_custom_field_and_country(self) -> None:
        r = RuleSet(0, parse_rule_set(DEFAULT_RULE_SET))
        vp = {
            "job_title": "VP Sales",
            "custom_fields": {"company_size": "51-200"},
            "country": "DE",
            "email": "a@acme.io",
        }
        assert {x.id for x in r.matching_attributes(vp)} == {
            "senior-title",
            "company-size",
            "target-country",
        }
        small = {
            "job_title": "Engineer",
            "custom_fields": {"company_size": "11-50"},
            "country": "BR",
        }
        assert r.matching_attributes(small) == []

    def test_negative_rules_on_subscription_and_free_mail(self) -> None:
        r = RuleSet(0, parse_rule_set(DEFAULT_RULE_SET))
        found = r.matching_attributes(
            {"subscription_status": "unsubscribed", "email": "x@Gmail.com"}
        )
        assert {(x.id, x.points) for x in found} == {("unsubscribed", -20), ("free-mail", -5)}

    def test_competitor_domain(self) -> None:
        r = rules(
            {
                "id": "competitor",
                "kind": "negative",
                "when": [{"field": "email_domain", "op": "in", "value": ["rival.com"]}],
                "points": -100,
            }
        )
        assert r.matching_attributes({"email": "spy@rival.com"})
        assert not r.matching_attributes({"email": "friend@ally.com"})
