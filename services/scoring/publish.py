"""How scoring's events are written: into the unit of work's outbox, keyed by contact, the hot
paths' payloads prepared without a validation each (a test holds them to their models)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from services.scoring.scores import domain as scores
from services.scoring.scores.domain import Crossing
from services.scoring.store import Outbox
from shared.events import topics
from shared.events.envelope import Envelope, EventPayload, PreparedEnvelope
from shared.events.scores import ScoreChanged, ScoreThresholdCrossed

SOURCE = "/leadwire/scoring"


def _random_ids(chunk: int = 256) -> Iterator[str]:
    """Random (version 4) event ids, drawing the randomness once per `chunk` ids instead of a
    system call per id (uuid4's cost showed on the engagement hot path)."""
    while True:
        pool = os.urandom(16 * chunk)
        for start in range(0, 16 * chunk, 16):
            yield str(uuid.UUID(bytes=pool[start : start + 16], version=4))


event_ids = _random_ids()


def publish(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    payload: EventPayload,
    correlationid: str | None = None,
) -> None:
    envelope = Envelope.of(
        payload, source=SOURCE, workspace=workspace, subject=contact_id, correlationid=correlationid
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


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
    envelope = PreparedEnvelope.prepare(
        ScoreChanged.event_type,
        data,
        source=SOURCE,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=next(event_ids),
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


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
    envelope = PreparedEnvelope.prepare(
        ScoreThresholdCrossed.event_type,
        data,
        source=SOURCE,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=next(event_ids),
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


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
