"""Run events are encoded straight to bytes (the same bytes their envelope would give), and
effect ids are the uuid5 of their idempotency key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.workflows.engine.domain import EFFECT_NAMESPACE, effect_id
from services.workflows.engine.handlers import SOURCE
from shared.events.envelope import Envelope, PreparedEnvelope, encode_envelope


class TestEncodeEnvelope:
    def test_gives_the_bytes_of_the_prepared_envelope(self) -> None:
        at = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)
        data = {"enrollment_id": "enr_1", "detail": {"n": 1, "none": None}, "until": None}
        for traceparent in (None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
            expected = PreparedEnvelope.prepare(
                "workflow.step_completed",
                data,
                source=SOURCE,
                workspace="ws",
                subject="c1",
                correlationid="corr",
                event_id="ev-1",
                time=at,
                traceparent=traceparent,
            ).to_bytes()
            encoded = encode_envelope(
                "workflow.step_completed",
                data,
                event_id="ev-1",
                source=SOURCE,
                workspace="ws",
                subject="c1",
                correlationid="corr",
                time=at,
                traceparent=traceparent,
            )
            assert encoded == expected
            assert Envelope.from_bytes(encoded).traceparent == traceparent


class TestEffectId:
    def test_is_the_uuid5_of_the_idempotency_key(self) -> None:
        for key in ("workflow:enr_1:hello:1", "workflow:enr_ü:step-2:12", ""):
            assert effect_id(key) == str(uuid.uuid5(EFFECT_NAMESPACE, key))
