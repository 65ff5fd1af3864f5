"""The hot path's `lead.captured` bytes are exactly what the models encode."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.domain import CleanLead
from shared.events.envelope import Envelope, PreparedEnvelope
from shared.events.ingest import Consent, LeadCaptured, Utm, lead_captured_data

NOW = datetime(2026, 11, 22, 10, 30, 5, 123456, tzinfo=UTC)
ROUND = datetime(2026, 11, 22, 10, 30, 5, tzinfo=UTC)

LEADS = {
    "email only": CleanLead(email="ada@example.com"),
    "everything": CleanLead(
        email="ada@example.com",
        phone="+442079460018",
        first_name="Ada",
        last_name="Lovelace",
        company="Analytical Engines",
        job_title="Countess",
        country="GB",
        custom_fields={"industry": "math", "seats": 12, "tags": ["a", "b"], "none": None},
        tags=["vip", "webinar"],
        utm={"source": "news", "campaign": "q4", "term": "engines", "unknown": "x"},
        referrer="https://example.org/",
        page_url="https://example.com/signup?x=1",
        consent_granted=True,
        consent_text="I agree to be contacted.",
    ),
    "consent refused, no text": CleanLead(phone="+442079460018", consent_granted=False),
    "unicode": CleanLead(email="zoë@bücher.example", first_name="Zoë", company="Bücher & Co"),
}


def model_bytes(lead: CleanLead, at: datetime, source_id: str | None) -> bytes:
    consent = None
    if lead.consent_granted is not None:
        consent = Consent(
            granted=lead.consent_granted,
            text=lead.consent_text,
            granted_at=at if lead.consent_granted else None,
        )
    payload = LeadCaptured(
        submission_id="sub_1",
        source="form",
        source_id=source_id,
        dedupe_key=lead.dedupe_key,
        email=lead.email,
        phone=lead.phone,
        first_name=lead.first_name,
        last_name=lead.last_name,
        company=lead.company,
        job_title=lead.job_title,
        country=lead.country,
        custom_fields=lead.custom_fields,
        tags=lead.tags,
        utm=Utm(**lead.utm),
        referrer=lead.referrer,
        page_url=lead.page_url,
        consent=consent,
        captured_at=at,
    )
    envelope = Envelope.of(
        payload, source="leadwire/ingest", workspace="w1", subject="sub_1", correlationid="c1"
    )
    return envelope.model_copy(update={"id": "e1", "time": at}).to_bytes()


@pytest.mark.parametrize("name", sorted(LEADS))
@pytest.mark.parametrize("at", [NOW, ROUND], ids=["micros", "whole-second"])
@pytest.mark.parametrize("source_id", ["form_1", None])
def test_bytes_match_the_models(name: str, at: datetime, source_id: str | None) -> None:
    lead = LEADS[name]
    prepared = PreparedEnvelope.prepare(
        LeadCaptured.event_type,
        lead_captured_data("sub_1", "form", source_id, lead, at),
        source="leadwire/ingest",
        workspace="w1",
        subject="sub_1",
        correlationid="c1",
        event_id="e1",
        time=at,
    )
    assert prepared.to_bytes() == model_bytes(lead, at, source_id)
    parsed = Envelope.from_bytes(prepared.to_bytes()).payload(LeadCaptured)
    assert parsed.dedupe_key == lead.dedupe_key
