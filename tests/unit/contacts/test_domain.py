"""Pure rules of the contacts service: no database, no bus."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from services.contacts import domain
from services.contacts.captures import domain as captures_domain
from services.contacts.captures.domain import Capture
from services.contacts.domain import FieldDefinition, RuleViolation
from services.contacts.duplicates import domain as duplicates_domain
from services.contacts.duplicates.domain import DuplicatePerson
from services.contacts.owners import domain as owners_domain
from services.contacts.owners.domain import RotationMember
from services.contacts.reports import domain as reports_domain
from services.contacts.segments import domain as segments_domain
from services.contacts.segments.domain import Condition, Group

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)


def capture(**kw: object) -> Capture:
    base: dict[str, object] = {
        "email": None,
        "phone": None,
        "fields": {},
        "custom_fields": {},
        "tags": (),
    }
    return Capture(**(base | kw))  # type: ignore[arg-type]


class TestIdentity:
    def test_emails_are_matched_case_insensitively_and_trimmed(self) -> None:
        assert domain.normalise_email("  Ada@Example.COM ") == "ada@example.com"

    def test_a_malformed_email_is_a_violation_naming_the_field(self) -> None:
        with pytest.raises(RuleViolation) as err:
            domain.normalise_email("not-an-email")
        assert err.value.errors[0]["field"] == "email"

    def test_national_phone_numbers_become_e164_with_the_country(self) -> None:
        assert domain.normalise_phone("030 901820", "DE") == "+4930901820"
        assert domain.normalise_phone("+49 (30) 901820") == "+4930901820"

    def test_email_match_wins_over_phone_match(self) -> None:
        found = captures_domain.match_contact(
            capture(email="a@x.io", phone="+4930901820"), {"a@x.io": "A"}, {"+4930901820": "B"}
        )
        assert found == ("A", "email")

    def test_phone_matches_when_the_email_is_unknown(self) -> None:
        found = captures_domain.match_contact(
            capture(email="new@x.io", phone="+4930901820"), {}, {"+4930901820": "B"}
        )
        assert found == ("B", "phone")

    def test_nothing_matches_a_new_person(self) -> None:
        assert captures_domain.match_contact(capture(email="n@x.io"), {}, {}) == (None, "new")


class TestCaptureChanges:
    def test_empty_values_never_overwrite_filled_ones(self) -> None:
        current = {"first_name": "Ada", "company": "X", "custom_fields": {"industry": "a"}}
        raw = captures_domain.capture_from_lead(
            None, None, {"first_name": "", "company": None}, {}, []
        )
        assert captures_domain.capture_changes(current, raw, False, False) == {}

    def test_newer_non_empty_values_replace_other_fields(self) -> None:
        current = {"company": "Old", "custom_fields": {"industry": "a"}}
        raw = capture(fields={"company": "New"}, custom_fields={"company_size": "1-10"})
        assert captures_domain.capture_changes(current, raw, False, False) == {
            "company": "New",
            "custom_fields": {"industry": "a", "company_size": "1-10"},
        }

    def test_a_filled_identity_is_never_replaced(self) -> None:
        current = {"email": "a@x.io", "phone": "+4930901820"}
        raw = capture(email="b@x.io", phone="+4930901821")
        assert captures_domain.capture_changes(current, raw, False, False) == {}

    def test_a_missing_phone_is_filled_unless_another_contact_holds_it(self) -> None:
        raw = capture(phone="+4930901820")
        assert captures_domain.capture_changes({"phone": None}, raw, False, False) == {
            "phone": "+4930901820"
        }
        assert captures_domain.capture_changes({"phone": None}, raw, True, False) == {}


class TestCustomFields:
    definitions: ClassVar[dict[str, FieldDefinition]] = {
        **domain.DEFAULT_FIELDS,
        "seats": FieldDefinition("seats", "number", min=1, max=10, required=True),
        "plan": FieldDefinition("plan", "select", options=("free", "pro")),
        "beta": FieldDefinition("beta", "boolean"),
        "code": FieldDefinition("code", "text", pattern=r"[A-Z]{3}"),
    }

    def test_valid_values_are_cleaned(self) -> None:
        result = domain.validate_custom_fields(
            {
                "seats": "3",
                "plan": "pro",
                "beta": "yes",
                "product_requests": "api",
                "subscription_end_date": "2026-05-01T00:00:00Z",
            },
            self.definitions,
        )
        assert result == {
            "seats": 3,
            "plan": "pro",
            "beta": True,
            "product_requests": ["api"],
            "subscription_end_date": "2026-05-01",
        }

    def test_every_failing_field_is_named_with_its_reason(self) -> None:
        with pytest.raises(RuleViolation) as err:
            domain.validate_custom_fields(
                {"seats": 11, "plan": "gold", "code": "abc", "nope": 1}, self.definitions
            )
        assert {(e["field"], e["code"]) for e in err.value.errors} == {
            ("custom_fields.seats", "too_large"),
            ("custom_fields.plan", "not_an_option"),
            ("custom_fields.code", "pattern"),
            ("custom_fields.nope", "unknown_field"),
        }

    def test_required_fields_are_checked_on_create(self) -> None:
        with pytest.raises(RuleViolation) as err:
            domain.validate_custom_fields({}, self.definitions, check_required=True)
        assert err.value.errors[0]["code"] == "required"

    def test_captures_keep_valid_values_and_report_the_rest(self) -> None:
        accepted, rejected = domain.accept_captured_fields(
            {"seats": "many", "utm_term": "x", "plan": "free"}, self.definitions
        )
        assert accepted == {"utm_term": "x", "plan": "free"}
        assert rejected[0]["field"] == "custom_fields.seats"

    def test_a_definition_may_not_reuse_a_core_field_name(self) -> None:
        with pytest.raises(RuleViolation):
            domain.check_definition(FieldDefinition("email", "text"))

    def test_a_definition_name_with_a_trailing_newline_is_refused(self) -> None:
        with pytest.raises(RuleViolation):
            domain.check_definition(FieldDefinition("seats\n", "text"))


class TestLifecycle:
    def test_churned_needs_a_known_reason(self) -> None:
        with pytest.raises(RuleViolation):
            domain.check_lifecycle_change("churned", None, None)
        with pytest.raises(RuleViolation):
            domain.check_lifecycle_change("churned", "other", "  ")
        change = domain.check_lifecycle_change("churned", "other", "moved abroad")
        assert change.churn_reason_text == "moved abroad"

    def test_leaving_churned_clears_the_reason(self) -> None:
        change = domain.check_lifecycle_change("customer", "budget", "x")
        assert (change.churn_reason, change.churn_reason_text) == (None, None)

    def test_churn_rate_is_churned_over_customers_at_start(self) -> None:
        assert reports_domain.churn_rate(200, 5) == 2.5
        assert reports_domain.churn_rate(0, 3) == 0.0


class TestMergeChoice:
    def test_the_most_recently_updated_non_empty_value_wins_by_default(self) -> None:
        survivor = {
            "updated_at": T0,
            "company": "Old",
            "first_name": None,
            "lifecycle_stage": "lead",
        }
        merged = {"updated_at": T1, "company": "New", "first_name": "Ada", "job_title": None}
        merged["lifecycle_stage"] = "mql"
        survivor["job_title"] = "CTO"
        chosen = duplicates_domain.choose_merged_values(survivor, merged, {})
        assert chosen["company"] == "New"
        assert chosen["first_name"] == "Ada"
        assert chosen["job_title"] == "CTO"
        assert chosen["lifecycle_stage"] == "mql"

    def test_a_field_choice_overrides_the_default(self) -> None:
        survivor = {"updated_at": T0, "company": "Old", "lifecycle_stage": "lead"}
        merged = {"updated_at": T1, "company": "New", "lifecycle_stage": "lead"}
        chosen = duplicates_domain.choose_merged_values(survivor, merged, {"company": "survivor"})
        assert chosen["company"] == "Old"

    def test_custom_fields_merge_key_by_key(self) -> None:
        survivor = {"updated_at": T1, "lifecycle_stage": "lead", "custom_fields": {"a": 1}}
        merged = {"updated_at": T0, "lifecycle_stage": "lead", "custom_fields": {"a": 2, "b": 3}}
        assert duplicates_domain.choose_merged_values(survivor, merged, {})["custom_fields"] == {
            "a": 1,
            "b": 3,
        }

    def test_an_unknown_choice_is_rejected(self) -> None:
        with pytest.raises(RuleViolation):
            duplicates_domain.choose_merged_values(
                {"updated_at": T0}, {"updated_at": T1}, {"password": "merged"}
            )


class TestRotation:
    def test_round_robin_cycles_and_skips_inactive_owners(self) -> None:
        members = [RotationMember("a", True), RotationMember("b", False), RotationMember("c", True)]
        picks, last = [], None
        for _ in range(4):
            last = owners_domain.pick_round_robin(members, last)
            picks.append(last)
        assert picks == ["a", "c", "a", "c"]

    def test_weighted_rotation_is_proportional_over_any_full_cycle(self) -> None:
        members = [
            RotationMember("a", True, 5),
            RotationMember("b", True, 3),
            RotationMember("c", True, 2),
        ]
        credits = {m.owner_id: 0 for m in members}
        picks = []
        for _ in range(100):
            current = [
                RotationMember(m.owner_id, True, m.weight, credits[m.owner_id]) for m in members
            ]
            chosen, credits = owners_domain.pick_weighted(current)
            picks.append(chosen)
        assert Counter(picks) == {"a": 50, "b": 30, "c": 20}
        assert Counter(picks[:10]) == {"a": 5, "b": 3, "c": 2}

    def test_a_team_without_active_owners_is_a_violation(self) -> None:
        with pytest.raises(RuleViolation):
            owners_domain.pick_weighted([RotationMember("a", False, 1)])


class TestFilterLanguage:
    def test_nested_groups_parse_into_a_tree(self) -> None:
        node = segments_domain.parse_filter(
            {
                "and": [
                    {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
                    {"not": {"field": "tags", "op": "contains", "value": "VIP"}},
                    {"field": "product_requests", "op": "contains", "value": "api"},
                ]
            },
            domain.DEFAULT_FIELDS,
        )
        assert isinstance(node, Group)
        assert node.children[1] == Group(
            "not", (Condition("tags", "set", "contains", "vip", False),)
        )
        assert node.children[2] == Condition("product_requests", "multi", "contains", "api", True)
        assert not segments_domain.is_time_based(node)

    def test_relative_dates_make_a_segment_time_based(self) -> None:
        node = segments_domain.parse_filter(
            {"field": "subscription_end_date", "op": "within_next_days", "value": 30},
            domain.DEFAULT_FIELDS,
        )
        assert segments_domain.is_time_based(node)

    @pytest.mark.parametrize(
        ("raw", "path", "code"),
        [
            ({"field": "shoe", "op": "eq", "value": "x"}, "filter.field", "unknown_field"),
            ({"field": "score", "op": "contains", "value": 1}, "filter.op", "invalid_op"),
            (
                {"field": "lifecycle_stage", "op": "eq", "value": "boss"},
                "filter.value",
                "invalid_value",
            ),
            ({"or": []}, "filter.or", "empty_group"),
            ({"and": [{"field": "email"}]}, "filter.and[0]", "invalid_condition"),
            (
                {"field": "last_interaction_at", "op": "older_than_days", "value": "30"},
                "filter.value",
                "invalid_value",
            ),
            ({"and": [], "or": []}, "filter", "ambiguous"),
        ],
    )
    def test_mistakes_are_reported_with_their_path(self, raw: object, path: str, code: str) -> None:
        with pytest.raises(RuleViolation) as err:
            segments_domain.parse_filter(raw, domain.DEFAULT_FIELDS)
        assert (err.value.errors[0]["field"], err.value.errors[0]["code"]) == (path, code)

    def test_deep_nesting_is_refused(self) -> None:
        raw: dict[str, object] = {"field": "score", "op": "gt", "value": 1}
        for _ in range(12):
            raw = {"not": raw}
        with pytest.raises(RuleViolation):
            segments_domain.parse_filter(raw, {})


class TestDuplicates:
    def test_similar_names_at_one_company_and_email_variants_are_candidates(self) -> None:
        people = [
            DuplicatePerson("1", "jon.smith@acme.io", None, "Jon", "Smith", "Acme"),
            DuplicatePerson("2", "js@other.io", None, "John", "Smith", "ACME "),
            DuplicatePerson("3", "jonsmith+news@acme.io", None, None, None, None),
            DuplicatePerson("4", "zed@zzz.io", "+4930901820", "Zed", "Z", "Other"),
            DuplicatePerson("5", "zed2@yyy.io", "+4930901820", None, None, None),
        ]
        found = {(c.a, c.b): c for c in duplicates_domain.find_duplicates(people)}
        assert found[("1", "2")].reasons == ("similar_name_same_company",)
        assert found[("1", "3")].reasons == ("email_local_part_variant",)
        assert found[("4", "5")].reasons == ("same_phone_other_email",)
        assert ("1", "4") not in found
