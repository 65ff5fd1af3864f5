"""How scoring's events are written: into the unit of work's outbox, keyed by contact, encoded
straight to the bytes their envelopes give, without a model built or validated per event (a
test holds them to their models)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from services.scoring.scores import domain as scores
from services.scoring.scores.domain import Crossing
from services.scoring.store import Outbox
from shared.events import topics
from shared.events.envelope import encode_envelope, source_of
from shared.events.scores import ChurnRiskChanged, ScoreChanged, ScoreThresholdCrossed
from shared.ids import event_id
from shared.logs import correlation_id_var
from shared.tracing import traceparent_for

SOURCE = source_of("scoring")


def _random_ids(chunk: int = 256) -> Iterator[str]:
    """Random (version 4) event ids, the form `uuid.uuid4()` gives, drawing the randomness once
    per `chunk` ids and formatting them from one hex string (a `uuid.UUID` per id, and a system
    call each, showed on the engagement hot path)."""
    while True:
        pool = bytearray(os.urandom(16 * chunk))
        for start in range(0, 16 * chunk, 16):
            pool[start + 6] = (pool[start + 6] & 0x0F) | 0x40  # version 4
            pool[start + 8] = (pool[start + 8] & 0x3F) | 0x80  # the RFC 4122 variant
        digits = pool.hex()
        for i in range(0, 32 * chunk, 32):
            yield (
                f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-{digits[i + 12 : i + 16]}"
                f"-{digits[i + 16 : i + 20]}-{digits[i + 20 : i + 32]}"
            )


event_ids = _random_ids()


def _emit(
    outbox: Outbox,
    event_type: str,
    data: dict[str, Any],
    workspace: str,
    contact_id: str,
    correlationid: str | None,
) -> None:
    """Encode one score event as `PreparedEnvelope.prepare(...).to_bytes()` would and queue it
    in the outbox."""
    correlationid = correlationid or correlation_id_var.get() or event_id()
    eid = next(event_ids)
    payload = encode_envelope(
        event_type,
        data,
        event_id=eid,
        source=SOURCE,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        time=datetime.now(UTC),
        traceparent=traceparent_for(correlationid),
    )
    outbox.emit_encoded(topics.SCORES, topics.contact_key(workspace, contact_id), eid, payload)


def publish_score_changed(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    change: scores.Change,
    cause: str,
    version: int,
    correlationid: str | None,
) -> None:
    """`score.changed` on the hot path: its data written in the shape `ScoreChanged` gives it
    (a test holds the two to the same JSON), without a model validation per event."""
    data = {
        "contact_id": contact_id,
        "group": change.group,
        "before": float(change.before),
        "after": float(change.after),
        "cause": cause,
        "rule_set_version": version,
    }
    _emit(outbox, ScoreChanged.event_type, data, workspace, contact_id, correlationid)


def publish_churn_risk_changed(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    risk: int,
    band: str,
    segment: str,
    previous_band: str | None,
    previous_segment: str | None,
) -> None:
    """`churn_risk.changed`, written like `publish_score_changed` (`None` fields left out, as
    the model's dump leaves them out)."""
    data: dict[str, Any] = {
        "contact_id": contact_id,
        "risk": risk,
        "band": band,
        "segment": segment,
    }
    if previous_band is not None:
        data["previous_band"] = previous_band
    if previous_segment is not None:
        data["previous_segment"] = previous_segment
    _emit(outbox, ChurnRiskChanged.event_type, data, workspace, contact_id, None)


def ts(value: datetime) -> float:
    return value.timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def publish_crossing(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    crossing: Crossing,
    correlationid: str | None,
) -> None:
    """`score.threshold_crossed`, written like `publish_score_changed` (10,000 crossings due at
    once must all be out within seconds)."""
    data = {
        "contact_id": contact_id,
        "group": crossing.group,
        "threshold": crossing.threshold,
        "value": float(crossing.level),
        "score": float(crossing.score),
        "direction": crossing.direction,
        "crossed_at": at(crossing.at),
    }
    _emit(outbox, ScoreThresholdCrossed.event_type, data, workspace, contact_id, correlationid)


def report(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    changes: Sequence[scores.Change],
    crossings: Sequence[Crossing],
    cause: str,
    version: int,
    correlationid: str | None = None,
) -> None:
    """Publish the visible score changes and threshold crossings of one contact."""
    for change in changes:
        publish_score_changed(outbox, workspace, contact_id, change, cause, version, correlationid)
    for crossing in crossings:
        publish_crossing(outbox, workspace, contact_id, crossing, correlationid)
