"""The hot paths' score events are byte for byte what their models give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.scoring import publish
from services.scoring.scores.domain import Change, Crossing
from shared.events.envelope import Envelope, EventPayload
from shared.events.scores import ChurnRiskChanged, ScoreChanged, ScoreThresholdCrossed


class Captured:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Envelope]] = []
        self.raw: list[bytes] = []

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        envelope = Envelope.from_bytes(payload)
        assert envelope.id == event_id
        self.sent.append((topic, key, envelope))
        self.raw.append(payload)


def as_model_would(prepared: Envelope, payload: EventPayload) -> bytes:
    reference = Envelope.of(
        payload,
        source=publish.SOURCE,
        workspace=prepared.workspace,
        subject=prepared.subject,
        correlationid=prepared.correlationid,
    )
    return reference.model_copy(update={"id": prepared.id, "time": prepared.time}).to_bytes()


class TestPreparedScoreEvents:
    def test_score_changed_matches_its_model(self) -> None:
        outbox = Captured()
        change = Change("overall", 12.5, 42.0)
        publish.publish_score_changed(outbox, "ws", "c1", change, "demo.requested", 3, "corr")
        [(topic, key, envelope)] = outbox.sent
        assert (topic, key) == ("leadwire.scores.v1", "ws:c1")
        payload = ScoreChanged(
            contact_id="c1",
            group="overall",
            before=12.5,
            after=42,
            cause="demo.requested",
            rule_set_version=3,
        )
        assert outbox.raw == [as_model_would(envelope, payload)]

    def test_threshold_crossed_matches_its_model(self) -> None:
        outbox = Captured()
        instant = datetime(2026, 3, 14, 1, 2, 3, 456789, tzinfo=UTC)
        crossing = Crossing("overall", "mql", 50, 44.999, "down", instant.timestamp())
        publish.publish_crossing(outbox, "ws", "c1", crossing, None)
        [(_, _, envelope)] = outbox.sent
        payload = ScoreThresholdCrossed(
            contact_id="c1",
            group="overall",
            threshold="mql",
            value=50,
            score=44.999,
            direction="down",
            crossed_at=instant,
        )
        assert outbox.raw == [as_model_would(envelope, payload)]
        assert envelope.payload(ScoreThresholdCrossed) == payload

    @pytest.mark.parametrize(
        ("previous_band", "previous_segment"), [(None, None), ("low", "loyal")]
    )
    def test_churn_risk_changed_matches_its_model(
        self, previous_band: str | None, previous_segment: str | None
    ) -> None:
        outbox = Captured()
        publish.publish_churn_risk_changed(
            outbox, "ws", "c1", 71, "high", "at_risk", previous_band, previous_segment
        )
        [(_, _, envelope)] = outbox.sent
        payload = ChurnRiskChanged(
            contact_id="c1",
            risk=71,
            band="high",
            segment="at_risk",
            previous_band=previous_band,
            previous_segment=previous_segment,
        )
        assert outbox.raw == [as_model_would(envelope, payload)]


class TestEventIds:
    def test_ids_are_distinct_version_4_uuids_in_their_usual_form(self) -> None:
        ids = [next(publish.event_ids) for _ in range(1000)]
        assert len(set(ids)) == 1000
        for value in ids:
            parsed = uuid.UUID(value)
            assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
            assert str(parsed) == value
