"""Leads are parsed once, into the same envelope and payload the two-step parse gives."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.contacts.consumers import CapturedLeadEnvelope, decode_lead, lane_of
from shared.events.envelope import Envelope
from shared.events.ingest import LeadCaptured, Utm


def lead_bytes(**data: object) -> bytes:
    payload = LeadCaptured(
        submission_id="sub-1",
        source="form",
        dedupe_key="email:ada@example.com",
        email="ada@example.com",
        first_name="Ada",
        custom_fields={"industry": "Retail", "seats": 12, "nothing": None},
        tags=["webinar"],
        utm=Utm(source="google"),
        captured_at=datetime(2026, 3, 1, 12, 0, 1, 5, tzinfo=UTC),
    )
    envelope = Envelope.of(payload, source="/leadwire/ingest", workspace="acme")
    raw = orjson.loads(envelope.to_bytes())
    raw["data"] |= data
    return orjson.dumps(raw)


def test_a_captured_lead_is_parsed_once_into_the_same_envelope_and_payload() -> None:
    raw = lead_bytes()
    event = decode_lead(raw)
    plain = Envelope.from_bytes(raw)
    assert isinstance(event, CapturedLeadEnvelope)
    assert event.payload(LeadCaptured) is event.data
    assert event.payload(LeadCaptured) == plain.payload(LeadCaptured)
    for name in ("id", "type", "workspace", "correlationid", "time", "source", "subject"):
        assert getattr(event, name) == getattr(plain, name)
    assert lane_of(event, 3) == lane_of(plain, 3)


def test_a_lead_with_invalid_data_stays_a_plain_envelope_the_handler_rejects() -> None:
    event = decode_lead(lead_bytes(source="carrier-pigeon"))
    assert not isinstance(event, CapturedLeadEnvelope)
    with pytest.raises(ValueError, match="source"):
        event.payload(LeadCaptured)


def test_another_type_on_the_topic_stays_a_plain_envelope() -> None:
    other = Envelope(source="/x", type="lead.forgotten", workspace="acme", correlationid="c")
    event = decode_lead(other.to_bytes())
    assert not isinstance(event, CapturedLeadEnvelope)
    assert event.type == "lead.forgotten"


def test_bytes_that_are_no_envelope_fail_as_before() -> None:
    with pytest.raises(ValueError, match=r"json_invalid|Invalid JSON"):
        decode_lead(b"{not json")
