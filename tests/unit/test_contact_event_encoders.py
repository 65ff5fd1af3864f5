"""The capture path's directly built contact events are byte for byte the models' own."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.events import contacts as capture_events
from shared.events.contacts import (
    ContactCreated,
    ContactOwnerAssigned,
    ContactSnapshot,
    ContactUpdated,
    FieldChange,
)
from shared.events.envelope import Envelope, EventPayload
from shared.ids import uuid7 as new_id
from shared.ids import uuid7s as random_ids

AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
STATES: list[dict[str, Any]] = [
    {
        "id": "c-1",
        "workspace": "acme",
        "email": "ada@example.com",
        "phone": None,
        "first_name": "Ada",
        "last_name": None,
        "company": "Analytical Engines",
        "job_title": None,
        "country": "GB",
        "source": "google",
        "lifecycle_stage": "lead",
        "owner_id": None,
        "subscription_status": "subscribed",
        "churn_reason": None,
        "churn_reason_text": None,
        "score": None,
        "custom_fields": {"industry": "Retail", "empty": None, "nested": {"a": [1, None]}},
        "created_at": AT,
        "updated_at": AT,
        "last_interaction_at": None,
        "merged_into": None,
    },
    {
        "id": "c-2",
        "workspace": "acme",
        "email": None,
        "phone": "+4930901820",
        "first_name": "Grace ✓",
        "last_name": "Hopper",
        "company": None,
        "job_title": "Admiral",
        "country": None,
        "source": None,
        "lifecycle_stage": "customer",
        "owner_id": "o-1",
        "subscription_status": "unsubscribed",
        "churn_reason": None,
        "churn_reason_text": None,
        "score": 73.5,
        "custom_fields": None,
        "created_at": AT.replace(microsecond=0),
        "updated_at": AT.astimezone(timezone(timedelta(hours=2))),
        "last_interaction_at": AT - timedelta(days=400),
        "merged_into": None,
    },
]


def models_bytes(payload: EventPayload, event_id: str, at: datetime) -> bytes:
    """What `Envelope.of` + `to_bytes` give for the payload model (id and time pinned)."""
    return Envelope.model_construct(
        id=event_id,
        time=at,
        source="/leadwire/contacts",
        type=payload.event_type,
        subject="c",
        data=payload.model_dump(mode="json", exclude_none=True),
        workspace="acme",
        correlationid="corr",
    ).to_bytes()


def direct_bytes(kind: str, data: dict[str, Any], event_id: str, at: datetime) -> bytes:
    envelope = capture_events.contact_event(
        event_id, kind, "/leadwire/contacts", "acme", "c", data, "corr"
    )
    envelope.time = at
    return envelope.to_bytes()


def model_snapshot(state: dict[str, Any], tags: list[str], lists: list[str]) -> ContactSnapshot:
    values = {name: state[name] for name in capture_events.SNAPSHOT_ORDER if name in state}
    values["custom_fields"] = state["custom_fields"] or {}
    return ContactSnapshot.model_construct(**values, tags=sorted(tags), lists=sorted(lists))


@pytest.mark.parametrize("state", STATES, ids=["email-only", "phone-and-score"])
@pytest.mark.parametrize("submission_id", ["sub-1", None])
def test_contact_created_is_encoded_as_the_models_encode_it(
    state: dict[str, Any], submission_id: str | None
) -> None:
    tags, lists = ["webinar", "pricing"], ["newsletter"]
    payload = ContactCreated.model_construct(
        contact=model_snapshot(state, tags, lists), cause="lead.captured", submission_id=None
    )
    payload.submission_id = submission_id
    data = capture_events.contact_created_data(
        capture_events.contact_snapshot_data(state, tags, lists), "lead.captured", submission_id
    )
    assert direct_bytes(capture_events.ContactCreated.event_type, data, "e-1", AT) == models_bytes(
        payload, "e-1", AT
    )


@pytest.mark.parametrize("owner", [("Ada", "ada@x.example"), ("Ada", None)], ids=["both", "name"])
def test_contact_created_with_its_owner_is_encoded_as_the_models_encode_it(
    owner: tuple[str, str | None],
) -> None:
    state = STATES[1]
    payload = ContactCreated.model_construct(
        contact=model_snapshot(state, [], []),
        cause="lead.captured",
        submission_id="sub-1",
        owner_name=owner[0],
        owner_email=owner[1],
    )
    data = capture_events.contact_created_data(
        capture_events.contact_snapshot_data(state, [], []), "lead.captured", "sub-1", *owner
    )
    assert direct_bytes(ContactCreated.event_type, data, "e-1", AT) == models_bytes(
        payload, "e-1", AT
    )


@pytest.mark.parametrize("team_id", ["t-1", None])
@pytest.mark.parametrize("email", ["ada@x.example", None])
def test_contact_owner_assigned_is_encoded_as_the_models_encode_it(
    team_id: str | None, email: str | None
) -> None:
    state = STATES[1]
    payload = ContactOwnerAssigned.model_construct(
        contact_id=state["id"],
        owner_id="o-1",
        previous_owner_id=None,
        team_id=team_id,
        rule="weighted",
        owner_name="Ada",
        owner_email=email,
        contact=model_snapshot(state, ["a"], []),
    )
    data = capture_events.contact_owner_assigned_data(
        capture_events.contact_snapshot_data(state, ["a"], []),
        "o-1",
        team_id,
        "weighted",
        "Ada",
        email,
    )
    assert direct_bytes(ContactOwnerAssigned.event_type, data, "e-4", AT) == models_bytes(
        payload, "e-4", AT
    )


@pytest.mark.parametrize("state", STATES, ids=["email-only", "phone-and-score"])
def test_contact_updated_is_encoded_as_the_models_encode_it(state: dict[str, Any]) -> None:
    changes: dict[str, tuple[Any, Any]] = {
        "first_name": (None, "Ada"),
        "company": ("Old", None),
        "custom_fields": ({"a": None}, {"a": None, "b": 2.0}),
        "tags": (["a"], ["a", "b"]),
    }
    payload = ContactUpdated.model_construct(
        contact_id="c",
        changes={name: FieldChange(before=b, after=a) for name, (b, a) in changes.items()},
        contact=model_snapshot(state, ["b", "a"], []),
        cause="lead.captured",
        submission_id="sub-9",
    )
    data = capture_events.contact_updated_data(
        "c",
        changes,
        capture_events.contact_snapshot_data(state, ["b", "a"], []),
        "lead.captured",
        "sub-9",
    )
    assert direct_bytes(capture_events.ContactUpdated.event_type, data, "e-2", AT) == models_bytes(
        payload, "e-2", AT
    )


def test_the_encoded_envelope_reads_back_as_a_valid_envelope_and_payload() -> None:
    data = capture_events.contact_created_data(
        capture_events.contact_snapshot_data(STATES[1], [], []), "lead.captured", "sub-1"
    )
    raw = capture_events.contact_event(
        "e-3",
        capture_events.ContactCreated.event_type,
        "/leadwire/contacts",
        "acme",
        "c-2",
        data,
        "corr",
    ).to_bytes()
    envelope = Envelope.from_bytes(raw)
    created = envelope.payload(ContactCreated)
    assert envelope.id == "e-3"
    assert envelope.subject == "c-2"
    assert created.contact.phone == "+4930901820"
    assert created.contact.last_interaction_at == STATES[1]["last_interaction_at"]


def test_new_ids_are_distinct_time_ordered_version_7_uuids() -> None:
    ids = [*itertools.islice(random_ids(chunk=7), 1000), *(new_id() for _ in range(100))]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    millis = [int(value.replace("-", "")[:12], 16) for value in ids]
    assert millis == sorted(millis), "ids made later sort later (to the millisecond)"
    assert abs(millis[-1] - time.time() * 1000) < 60_000
