"""Ingest's pure rules: normalisation, form checks, mapping, signatures, rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.ingest import domain
from services.ingest.domain import Accepted, InvalidValue, Rejected, Spam
from services.ingest.forms import domain as forms_domain
from services.ingest.forms.domain import ConsentSpec, FormField, FormRules
from services.ingest.leads import domain as leads_domain
from services.ingest.webhooks import domain as webhooks_domain
from shared.events.ingest import PageViewed, PurchaseCompleted

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def rules(*fields: FormField, **extra: object) -> FormRules:
    return FormRules.model_validate({"fields": [f.model_dump() for f in fields], **extra})


def email_field(required: bool = True) -> FormField:
    return FormField(name="email", type="email", label="Email", required=required)


def codes(verdict: object) -> dict[str, str]:
    assert isinstance(verdict, Rejected), verdict
    return {p.field: p.code for p in verdict.problems}


class TestNormaliseEmail:
    def test_trims_and_lower_cases_the_whole_address(self) -> None:
        assert domain.normalise_email("  Ann.Lee@Example.COM ") == "ann.lee@example.com"

    def test_one_address_in_any_case_is_one_identity(self) -> None:
        verdicts = [
            forms_domain.check_form_submission(rules(email_field()), {"email": [typed]})
            for typed in ("ann.lee@example.com", "Ann.Lee@Example.COM", "ANN.LEE@EXAMPLE.COM")
        ]
        leads = [v.lead for v in verdicts if isinstance(v, Accepted)]
        assert len(leads) == 3
        assert {lead.email for lead in leads} == {"ann.lee@example.com"}
        assert {lead.dedupe_key for lead in leads} == {"email:ann.lee@example.com"}

    def test_encodes_an_internationalised_domain_with_idna(self) -> None:
        assert domain.normalise_email("ann@Bücher.example") == "ann@xn--bcher-kva.example"

    def test_refuses_an_address_without_an_at_sign(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_email("ann.example.com")
        assert caught.value.code == "invalid_email"

    def test_refuses_an_address_longer_than_the_rfc_allows(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_email("a" * 250 + "@example.com")
        assert caught.value.code == "too_long"


class TestNormalisePhone:
    def test_parses_a_national_number_with_the_default_region(self) -> None:
        assert domain.normalise_phone("020 7946 0018", "GB") == "+442079460018"

    def test_keeps_an_international_number_whatever_the_region(self) -> None:
        assert domain.normalise_phone("+1 (650) 253-0000", "GB") == "+16502530000"

    def test_refuses_a_number_that_is_not_valid(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_phone("12345", "GB")
        assert caught.value.code == "invalid_phone"

    def test_refuses_a_national_number_without_a_region(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_phone("020 7946 0018", None)
        assert caught.value.code == "invalid_phone"


class TestNormaliseOtherValues:
    @pytest.mark.parametrize(
        ("raw", "code"),
        [("United Kingdom", "GB"), ("deu", "DE"), ("fr", "FR"), ("  germany ", "DE")],
    )
    def test_countries_become_iso_alpha_2(self, raw: str, code: str) -> None:
        assert domain.normalise_country(raw) == code

    def test_an_unknown_country_is_refused(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_country("Narnia")
        assert caught.value.code == "invalid_country"

    def test_names_are_trimmed_with_whitespace_collapsed(self) -> None:
        assert domain.normalise_text("  Ann \t  Marie\nLee ") == "Ann Marie Lee"

    def test_dates_become_iso_8601(self) -> None:
        assert domain.normalise_date("2026-03-01") == "2026-03-01"
        assert domain.normalise_date("2026-03-01T10:00:00+02:00") == "2026-03-01T08:00:00Z"

    def test_a_date_that_is_not_iso_is_refused(self) -> None:
        with pytest.raises(InvalidValue) as caught:
            domain.normalise_date("next tuesday")
        assert caught.value.code == "invalid_date"


class TestFormDefinition:
    def test_a_select_without_options_is_refused(self) -> None:
        with pytest.raises(ValueError, match="needs options"):
            FormField(name="size", type="select", label="Size")

    def test_a_pattern_that_does_not_compile_is_refused(self) -> None:
        with pytest.raises(ValueError, match="does not compile"):
            FormField(name="code", label="Code", pattern="([a-z]")

    def test_a_backreference_is_refused_as_re2_cannot_bound_it(self) -> None:
        with pytest.raises(ValueError, match="does not compile"):
            FormField(name="code", label="Code", pattern=r"(a)\1")

    def test_a_catastrophic_pattern_still_answers_at_once(self) -> None:
        # `(a+)+$` backtracks exponentially in a backtracking engine on "aaa…b"; RE2 does not.
        form = rules(email_field(), FormField(name="code", label="Code", pattern=r"(a+)+$"))
        values = {"email": ["ada@example.com"], "code": ["a" * 200 + "b"]}
        assert codes(forms_domain.check_form_submission(form, values)) == {"code": "pattern"}
        values["code"] = ["a" * 200]
        assert isinstance(forms_domain.check_form_submission(form, values), domain.Accepted)

    def test_a_field_named_like_a_tracking_field_is_refused(self) -> None:
        with pytest.raises(ValueError, match="reserved"):
            rules(email_field(), FormField(name="utm_source", label="Source"))

    def test_fields_map_to_contact_fields_or_custom_fields(self) -> None:
        assert FormField(name="company", label="Company").target == "company"
        assert FormField(name="plan", label="Plan").target == "custom.plan"
        assert FormField(name="org", label="Org", maps_to="company").target == "company"


class TestCheckFormSubmission:
    def test_a_valid_post_becomes_a_normalised_lead_with_tracking_and_consent(self) -> None:
        form = rules(
            email_field(),
            FormField(name="first_name", label="First name"),
            FormField(name="phone", type="phone", label="Phone"),
            FormField(name="country", label="Country"),
            FormField(name="employees", type="number", label="Employees"),
            FormField(name="topics", type="multi-select", label="Topics", options=["a", "b"]),
            default_region="GB",
            consent=ConsentSpec(text="I agree"),
        )
        verdict = forms_domain.check_form_submission(
            form,
            {
                "email": [" Ann@Example.com"],
                "first_name": ["  ann   "],
                "phone": ["020 7946 0018"],
                "country": ["united kingdom"],
                "employees": ["42"],
                "topics": ["a", "b"],
                "consent": ["on"],
                "utm_source": ["newsletter"],
                "utm_campaign": ["spring"],
                "page_url": ["https://example.com/pricing"],
                "website": [""],
            },
        )
        assert isinstance(verdict, Accepted)
        lead = verdict.lead
        assert lead.email == "ann@example.com"
        assert lead.dedupe_key == "email:ann@example.com"
        assert lead.first_name == "ann"
        assert lead.phone == "+442079460018"
        assert lead.country == "GB"
        assert lead.custom_fields == {"employees": 42, "topics": ["a", "b"]}
        assert lead.utm == {"source": "newsletter", "campaign": "spring"}
        assert lead.page_url == "https://example.com/pricing"
        assert lead.consent_granted is True
        assert lead.consent_text == "I agree"

    def test_every_failing_field_is_reported_with_its_code(self) -> None:
        form = rules(
            email_field(),
            FormField(name="phone", type="phone", label="Phone"),
            FormField(name="first_name", label="First name", required=True),
            FormField(name="company", label="Company", max_length=5),
            FormField(name="ref", label="Ref", pattern=r"[A-Z]{3}-\d+"),
            FormField(name="size", type="select", label="Size", options=["small", "large"]),
            FormField(name="tools", type="multi-select", label="Tools", options=["x"]),
            FormField(name="seats", type="number", label="Seats"),
            FormField(name="start", type="date", label="Start"),
            FormField(name="country", label="Country"),
            default_region="GB",
            consent=ConsentSpec(text="I agree"),
        )
        verdict = forms_domain.check_form_submission(
            form,
            {
                "email": ["not-an-email"],
                "phone": ["123"],
                "company": ["Example Ltd"],
                "ref": ["abc"],
                "size": ["medium"],
                "tools": ["y"],
                "seats": ["many"],
                "start": ["soon"],
                "country": ["Atlantis"],
            },
        )
        assert codes(verdict) == {
            "email": "invalid_email",
            "phone": "invalid_phone",
            "first_name": "required",
            "company": "too_long",
            "ref": "pattern",
            "size": "not_an_option",
            "tools": "not_an_option",
            "seats": "not_a_number",
            "start": "invalid_date",
            "country": "invalid_country",
            "consent": "required",
        }

    def test_a_lead_without_email_or_phone_is_refused(self) -> None:
        form = rules(email_field(required=False), FormField(name="first_name", label="First name"))
        verdict = forms_domain.check_form_submission(form, {"first_name": ["Ann"]})
        assert codes(verdict) == {"email": "identity_required"}

    def test_a_phone_alone_is_enough_identity(self) -> None:
        form = rules(FormField(name="phone", type="phone", label="Phone"), default_region="US")
        verdict = forms_domain.check_form_submission(form, {"phone": ["(650) 253-0000"]})
        assert isinstance(verdict, Accepted)
        assert verdict.lead.dedupe_key == "phone:+16502530000"

    def test_a_filled_honeypot_is_spam(self) -> None:
        verdict = forms_domain.check_form_submission(
            rules(email_field()), {"email": ["a@example.com"], "website": ["http://spam"]}
        )
        assert verdict == Spam("spam.honeypot")

    def test_a_release_skips_the_honeypot(self) -> None:
        verdict = forms_domain.check_form_submission(
            rules(email_field()),
            {"email": ["a@example.com"], "website": ["x"]},
            skip_honeypot=True,
        )
        assert isinstance(verdict, Accepted)

    def test_an_unchecked_required_checkbox_is_required(self) -> None:
        form = rules(
            email_field(), FormField(name="terms", type="checkbox", label="Terms", required=True)
        )
        verdict = forms_domain.check_form_submission(form, {"email": ["a@example.com"]})
        assert codes(verdict) == {"terms": "required"}

    def test_json_values_read_like_a_browser_post(self) -> None:
        values = forms_domain.form_values(
            {"email": "a@example.com", "n": 3, "ok": True, "t": ["a", "b"]}
        )
        assert values == {"email": ["a@example.com"], "n": ["3"], "ok": ["true"], "t": ["a", "b"]}


class TestBuildLead:
    def test_api_values_are_normalised_and_custom_fields_kept(self) -> None:
        verdict = domain.build_lead(
            {
                "email": "ann@EXAMPLE.com",
                "company": " Acme   Inc ",
                "custom_fields": {"plan": " pro "},
                "tags": ["VIP", "vip", " webinar "],
            },
            None,
        )
        assert isinstance(verdict, Accepted)
        assert verdict.lead.company == "Acme Inc"
        assert verdict.lead.custom_fields == {"plan": "pro"}
        assert verdict.lead.tags == ["vip", "webinar"]

    def test_fields_are_reported_under_the_batch_prefix(self) -> None:
        verdict = domain.build_lead(
            {"email": "nope", "first_name": "x" * 300}, None, prefix="leads.3."
        )
        assert codes(verdict) == {
            "leads.3.email": "invalid_email",
            "leads.3.first_name": "too_long",
        }


class TestWebhookMapping:
    def test_dotted_paths_reach_into_objects_and_lists(self) -> None:
        payload = {"data": {"contact": {"email": "a@example.com"}, "items": [{"sku": "x1"}]}}
        assert webhooks_domain.resolve_path(payload, "data.contact.email") == "a@example.com"
        assert webhooks_domain.resolve_path(payload, "data.items.0.sku") == "x1"
        assert webhooks_domain.resolve_path(payload, "data.items.5.sku") is None
        assert webhooks_domain.resolve_path(payload, "data.nothing.here") is None

    def test_a_mapping_yields_lead_field_values(self) -> None:
        payload = {"person": {"mail": "a@example.com", "name": {"first": "Ann"}}, "plan": "pro"}
        values = webhooks_domain.map_payload(
            payload,
            {"email": "person.mail", "first_name": "person.name.first", "custom.plan": "plan"},
        )
        assert values == {"email": "a@example.com", "first_name": "Ann", "custom.plan": "pro"}
        verdict = domain.build_lead(values, None)
        assert isinstance(verdict, Accepted)
        assert verdict.lead.custom_fields == {"plan": "pro"}


class TestWebhookSignature:
    def test_matches_the_standard_webhooks_reference_vector(self) -> None:
        signature = webhooks_domain.sign(
            SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
        )
        assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def test_a_valid_signature_among_several_is_accepted(self) -> None:
        now = datetime.now(UTC)
        ts = int(now.timestamp())
        good = webhooks_domain.sign(SECRET, "msg_1", ts, b"{}")
        webhooks_domain.verify_signature(SECRET, "msg_1", str(ts), f"v1,AAAA {good}", b"{}", now)

    def test_a_signature_over_another_body_is_refused(self) -> None:
        now = datetime.now(UTC)
        ts = int(now.timestamp())
        signature = webhooks_domain.sign(SECRET, "msg_1", ts, b"{}")
        with pytest.raises(webhooks_domain.SignatureRejected) as caught:
            webhooks_domain.verify_signature(SECRET, "msg_1", str(ts), signature, b'{"a":1}', now)
        assert caught.value.code == "signature_invalid"

    def test_a_timestamp_older_than_five_minutes_is_refused(self) -> None:
        now = datetime.now(UTC)
        ts = int((now - timedelta(minutes=6)).timestamp())
        signature = webhooks_domain.sign(SECRET, "msg_1", ts, b"{}")
        with pytest.raises(webhooks_domain.SignatureRejected) as caught:
            webhooks_domain.verify_signature(SECRET, "msg_1", str(ts), signature, b"{}", now)
        assert caught.value.code == "signature_stale"

    def test_missing_headers_are_refused(self) -> None:
        with pytest.raises(webhooks_domain.SignatureRejected) as caught:
            webhooks_domain.verify_signature(SECRET, None, None, None, b"{}", datetime.now(UTC))
        assert caught.value.code == "signature_missing"


class TestTokenBuckets:
    def test_a_burst_is_allowed_then_the_wait_is_told(self) -> None:
        buckets = domain.TokenBuckets(rate=1.0, burst=3)
        assert [buckets.take("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert buckets.take("k", 100.0) == pytest.approx(1.0)
        assert buckets.take("other", 100.0) == 0.0

    def test_tokens_come_back_at_the_rate(self) -> None:
        buckets = domain.TokenBuckets(rate=2.0, burst=1)
        assert buckets.take("k", 0.0) == 0.0
        assert buckets.take("k", 0.25) == pytest.approx(0.25)
        assert buckets.take("k", 0.5) == 0.0

    def test_retry_after_is_a_whole_second_at_least(self) -> None:
        assert domain.retry_after(0.01) == 1
        assert domain.retry_after(2.2) == 3


class TestBuildEngagement:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def test_a_page_view_keeps_its_url(self) -> None:
        event = leads_domain.build_engagement(
            {"type": "page.viewed", "email": "A@Example.com", "url": "https://x.test/p"},
            "e1",
            self.now,
        )
        assert isinstance(event, PageViewed)
        assert event.email == "a@example.com"
        assert event.url == "https://x.test/p"
        assert event.occurred_at == self.now

    def test_a_purchase_needs_an_amount_and_a_known_currency(self) -> None:
        problems = leads_domain.build_engagement(
            {"type": "purchase.completed", "contact_id": "c1", "currency": "XYZ"}, "e1", self.now
        )
        assert isinstance(problems, tuple)
        assert {p.field: p.code for p in problems} == {
            "amount": "required",
            "currency": "invalid_currency",
        }
        event = leads_domain.build_engagement(
            {
                "type": "purchase.completed",
                "contact_id": "c1",
                "amount": Decimal("9.50"),
                "currency": "eur",
            },
            "e2",
            self.now,
        )
        assert isinstance(event, PurchaseCompleted)
        assert event.currency == "EUR"

    def test_an_unknown_type_and_no_person_are_both_reported(self) -> None:
        problems = leads_domain.build_engagement(
            {"type": "page.liked"}, "e1", self.now, prefix="events.0."
        )
        assert isinstance(problems, tuple)
        assert {p.field: p.code for p in problems} == {
            "events.0.type": "not_an_option",
            "events.0.email": "identity_required",
        }
