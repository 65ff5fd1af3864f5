"""`notification.sent` is encoded straight to bytes on the hot path: the same event, attribute
for attribute and in the same order, as the envelope of a `NotificationSent` gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.notifier.handlers import emit_outcome, emit_sent, outcome_fields
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationSent
from shared.uow import outbox_row

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def emit(self, topic: str, key: str, envelope: Envelope) -> None:
        self.rows.append(outbox_row(topic, key, envelope))

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        self.rows.append({"topic": topic, "key": key, "event_id": event_id, "payload": payload})


def delivery(**changes: Any) -> dict[str, Any]:
    return {
        "id": "ntf_1",
        "workspace": "ws",
        "idempotency_key": "wf:enr_1:alert:1",
        "contact_id": "c1",
        "channel": "sales",
        "kind": "slack",
        "correlation_id": "corr-1",
        "traceparent": TRACE,
    } | changes


@pytest.mark.parametrize(
    ("row", "provider_message_id"),
    [
        (delivery(), "1712.0001"),
        (delivery(contact_id=None), None),  # keyed and titled by its idempotency key
        (delivery(traceparent=None), None),  # the trace is the correlation id's
    ],
)
def test_the_encoded_event_is_the_envelopes(row: dict[str, Any], provider_message_id: str) -> None:
    encoded, modelled = Rows(), Rows()
    emit_sent(encoded, row, 2, provider_message_id)
    payload = NotificationSent(
        **outcome_fields(row), attempts=2, provider_message_id=provider_message_id
    )
    key = row["contact_id"] or row["idempotency_key"]
    emit_outcome(modelled, "ws", key, payload, row["correlation_id"], row["traceparent"])
    ours, theirs = encoded.rows[0], modelled.rows[0]
    assert (ours["topic"], ours["key"]) == (theirs["topic"], theirs["key"])
    mine = orjson.loads(ours["payload"])  # type: ignore[arg-type]
    expected = orjson.loads(theirs["payload"])  # type: ignore[arg-type]
    assert mine["id"] == ours["event_id"]
    assert list(mine) == list(expected)
    for document in (mine, expected):
        document.pop("id"), document.pop("time")
    assert mine == expected
    event = Envelope.from_bytes(ours["payload"])  # type: ignore[arg-type]
    assert event.payload(NotificationSent) == payload
