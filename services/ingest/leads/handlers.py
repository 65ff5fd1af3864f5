"""Use cases of the leads API: leads pushed one by one or in batches (all or nothing, with
idempotency keys), and engagement events published."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.ingest import domain
from services.ingest.domain import Accepted, FieldProblem, Rejected
from services.ingest.handlers import (
    IDEMPOTENCY_TTL,
    SOURCE,
    Capture,
    IdempotencyKeyReused,
    IngestRepository,
    Raw,
    problems_as_dicts,
)
from services.ingest.leads import domain as leads_domain
from services.ingest.models import IdempotencyKey
from services.ingest.schemas import EngagementIn, LeadIn
from shared.erasure import email_identity
from shared.errors import InvalidInput
from shared.events import topics
from shared.events.envelope import Envelope
from shared.ids import prefixed
from shared.uow import Transaction


@dataclass(frozen=True)
class LeadsPost:
    workspace: str
    leads: Sequence[LeadIn]
    batch: bool
    raw: Raw
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Answer:
    """What the API answers: accepted results (202) or every failing field (422)."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def capture_leads(cmd: LeadsPost, tx: Transaction[IngestRepository]) -> Answer:
    """One lead or a batch, all or nothing; the same Idempotency-Key answers the same again."""
    store = tx.store
    digest = request_hash(cmd.raw.body)
    now = datetime.now(UTC)
    if cmd.idempotency_key is not None:
        seen = await store.idempotency_key(cmd.workspace, cmd.idempotency_key)
        if seen is not None and seen.created_at > now - IDEMPOTENCY_TTL:
            if seen.request_hash != digest:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body"
                )
            return Answer(seen.status_code, seen.response, replayed=True)
        if seen is not None:
            await store.drop_idempotency_key(seen)

    capture = Capture(now)
    verdicts: list[Accepted | Rejected] = []
    for index, lead in enumerate(cmd.leads):
        prefix = f"leads.{index}." if cmd.batch else ""
        verdicts.append(domain.build_lead(lead.values(), None, prefix=prefix))
    failed = any(isinstance(v, Rejected) for v in verdicts)
    outcomes = []
    for lead, verdict in zip(cmd.leads, verdicts, strict=True):
        item_raw = Raw(
            "application/json",
            lead.model_dump_json(exclude_unset=True).encode(),
            cmd.raw.client_address,
            cmd.raw.origin,
        )
        data = lead.model_dump(mode="json", exclude_unset=True)
        # A batch is all or nothing: valid leads of a refused batch are kept, marked discarded.
        status = "discarded" if failed and isinstance(verdict, Accepted) else None
        reason = "batch_rejected" if status else None
        outcomes.append(
            capture.record(
                cmd.workspace, "api", None, item_raw, data, verdict, status=status, reason=reason
            )
        )
    await capture.flush(tx)

    if failed:
        problems = [p for o in outcomes for p in o.problems]
        answer = Answer(
            422,
            {
                "detail": "The request is invalid; see `errors` for every failing field.",
                "errors": problems_as_dicts(problems),
                "submission_ids": [o.submission_id for o in outcomes],
            },
        )
    else:
        results = [
            {"submission_id": o.submission_id, "status": "accepted", "dedupe_key": o.dedupe_key}
            for o in outcomes
        ]
        answer = Answer(202, results[0] if not cmd.batch else {"results": results})
    if cmd.idempotency_key is not None:
        await store.save_idempotency_key(
            IdempotencyKey(
                workspace=cmd.workspace,
                key=cmd.idempotency_key,
                request_hash=digest,
                status_code=answer.status_code,
                response=answer.body,
                created_at=now,
            )
        )
    return answer


async def replay_idempotent(
    workspace: str, key: str, body: bytes, tx: Transaction[IngestRepository]
) -> Answer | None:
    """After losing a race on a key: the winner's answer, or 409 for a different body."""
    seen = await tx.store.idempotency_key(workspace, key)
    if seen is None:
        return None
    if seen.request_hash != request_hash(body):
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return Answer(seen.status_code, seen.response, replayed=True)


async def publish_engagement(
    workspace: str, events: Sequence[EngagementIn], tx: Transaction[IngestRepository]
) -> list[str]:
    """Check a batch of engagement events and publish them all, or none (422)."""
    now = datetime.now(UTC)
    problems: list[FieldProblem] = []
    payloads = []
    for index, event in enumerate(events):
        result = leads_domain.build_engagement(
            event.model_dump(), event.id or prefixed("eng"), now, prefix=f"events.{index}."
        )
        if isinstance(result, tuple):
            problems.extend(result)
        else:
            payloads.append(result)
    if problems:
        raise InvalidInput(
            "The batch is invalid; see `errors` for every failing field.",
            errors=problems_as_dicts(problems),
        )
    for payload in payloads:
        who = payload.contact_id or email_identity(payload.email or "")
        envelope = Envelope.of(
            payload, source=SOURCE, workspace=workspace, subject=payload.engagement_id
        )
        tx.emit(topics.ENGAGEMENT, topics.contact_key(workspace, who), envelope)
    return [p.engagement_id for p in payloads]
