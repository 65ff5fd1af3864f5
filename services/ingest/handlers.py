"""What the use cases of every ingest area share: the repository Protocol they are typed
against, the refusals they raise, and the capture of submissions (their rows and
`lead.captured` events, judged together and written in one transaction).

Each area's use cases are in its `handlers.py`. None commits: the door opens the transaction
(`async with transaction(uow) as tx:`), and an accepted lead's `lead.captured` is written to
the outbox in the same transaction as its submission row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from services.ingest import domain
from services.ingest.domain import Accepted, CleanLead, FieldProblem, Rejected, Spam, Verdict
from services.ingest.models import Form, IdempotencyKey, Submission, WebhookSource
from services.ingest.webhooks import domain as webhooks_domain
from shared.erasure import (
    email_identity,
    identity_digest,
    phone_identity,
)
from shared.errors import Conflict, DomainError, InvalidInput, Unauthorized
from shared.events import topics
from shared.events.envelope import Envelope, PreparedEnvelope, source_of
from shared.events.ingest import LeadCaptured, lead_captured_data
from shared.ids import prefixed
from shared.json_limits import JsonLimitExceeded, check_json
from shared.uow import Transaction


class IngestRepository(Protocol):
    """The repository as ingest's use cases see it (`tx.store`): `IngestStore` in the service,
    an in-memory fake in a unit test."""

    async def add_form(self, form: Form) -> None: ...

    async def add_submissions(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def add_webhook_source(self, source: WebhookSource) -> None: ...

    async def delete_idempotency_records(self, workspace: str, keys: Sequence[str]) -> None: ...

    async def delete_outbox_rows(self, ids: Sequence[int]) -> None: ...

    async def delete_person_submissions(
        self, workspace: str, digests: Sequence[str], submission_ids: Sequence[str]
    ) -> list[str]: ...

    async def drop_idempotency_key(self, row: IdempotencyKey) -> None: ...

    async def erasures(self, workspace: str, digests: Sequence[str]) -> dict[str, datetime]: ...

    async def forget_idempotency_keys(self, before: datetime) -> None: ...

    async def forget_webhook_messages(self, before: datetime) -> None: ...

    async def form(self, form_id: str, workspace: str | None = None) -> Form | None: ...

    async def forms(self, workspace: str, limit: int, after: str | None) -> Sequence[Form]: ...

    async def idempotency_key(self, workspace: str, key: str) -> IdempotencyKey | None: ...

    async def idempotency_records(self, workspace: str) -> Sequence[IdempotencyKey]: ...

    async def mark_submission(
        self,
        submission_id: str,
        status: str,
        *,
        errors: list[dict[str, str]] | None = None,
        dedupe_key: str | None = None,
        released_at: datetime | None = None,
    ) -> None: ...

    async def outbox_events(self, ids: Sequence[int]) -> Sequence[tuple[str, bytes, bool]]: ...

    async def outbox_keys(self, workspace: str) -> Sequence[tuple[int, str]]: ...

    async def person_submissions(
        self, workspace: str, digests: Sequence[str], submission_ids: Sequence[str]
    ) -> Sequence[Submission]: ...

    async def quarantine(
        self,
        workspace: str,
        limit: int,
        reason: str | None = None,
        source: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> Sequence[Submission]: ...

    async def record_erasures(self, workspace: str, digests: list[str], at: datetime) -> None: ...

    async def remember_webhook_message(
        self, source_id: str, message_id: str, at: datetime
    ) -> bool: ...

    async def save_idempotency_key(self, row: IdempotencyKey) -> None: ...

    async def submission(self, workspace: str, submission_id: str) -> Submission | None: ...

    async def webhook_source(
        self, source_id: str, workspace: str | None = None
    ) -> WebhookSource | None: ...

    async def webhook_sources(self, workspace: str) -> Sequence[WebhookSource]: ...


SOURCE = source_of("ingest")
IDEMPOTENCY_TTL = timedelta(hours=24)
WEBHOOK_ID_TTL = timedelta(seconds=2 * webhooks_domain.WEBHOOK_TOLERANCE_S)


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "unsupported_media_type"


class OriginNotAllowed(DomainError):
    status_code = 403
    code = "origin_not_allowed"


class SignatureRejected(Unauthorized):
    code = "signature_rejected"


class WebhookReplayed(Conflict):
    code = "webhook_replayed"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class PersonErased(Conflict):
    code = "person_erased"


def problems_as_dicts(problems: Sequence[FieldProblem]) -> list[dict[str, str]]:
    return [p.as_dict() for p in problems]


def invalid(problems: Sequence[FieldProblem], **extra: Any) -> InvalidInput:
    return InvalidInput(
        "The submission is invalid; see `errors` for every failing field.",
        errors=problems_as_dicts(problems),
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Capturing submissions


@dataclass(frozen=True)
class Raw:
    """A submission as it arrived, kept whatever its outcome."""

    content_type: str
    body: bytes
    client_address: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class Outcome:
    submission_id: str
    status: Literal["accepted", "rejected", "spam"]
    problems: tuple[FieldProblem, ...] = ()
    dedupe_key: str | None = None
    reason: str | None = None


@dataclass
class Capture:
    """Submissions judged together: their rows and `lead.captured` events, written in one
    transaction (`flush` through a unit of work, or appended by the store's group commit)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, Envelope]] = field(default_factory=list)

    def record(
        self,
        workspace: str,
        source: Literal["form", "webhook", "api"],
        source_id: str | None,
        raw: Raw,
        data: Any,
        verdict: Verdict | None,
        *,
        status: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        region: str | None = None,
    ) -> Outcome:
        submission_id = prefixed("sub")
        problems: tuple[FieldProblem, ...] = ()
        dedupe_key = correlation = None
        if isinstance(verdict, Accepted):
            email, phone = verdict.lead.email, verdict.lead.phone
        else:  # no lead: whoever the data names, so an erasure of that person finds it
            email, phone = domain.identities_in(data, region)
        if isinstance(verdict, Accepted):
            status = status or "accepted"
            dedupe_key = verdict.lead.dedupe_key
            if status == "accepted":
                lead = verdict.lead
                event = lead_event(
                    workspace,
                    submission_id,
                    source,
                    source_id,
                    lead,
                    self.now,
                    correlation_id,
                    traceparent,
                )
                self.events.append(event)
                correlation = event[2].correlationid
        elif isinstance(verdict, Rejected):
            status, reason, problems = (
                status or "rejected",
                reason or "validation_failed",
                (verdict.problems),
            )
        elif isinstance(verdict, Spam):
            status, reason = "spam", verdict.reason
        self.rows.append(
            {
                "id": submission_id,
                "workspace": workspace,
                "source": source,
                "source_id": source_id,
                "status": status,
                "reason": reason,
                "errors": problems_as_dicts(problems) or None,
                "content_type": raw.content_type[:200],
                "raw": raw.body,
                "data": data,
                "client_address": raw.client_address,
                "origin": raw.origin[:500] if raw.origin else None,
                "dedupe_key": dedupe_key,
                "email_digest": email and identity_digest(workspace, email_identity(email)),
                "phone_digest": phone and identity_digest(workspace, phone_identity(phone)),
                "correlation_id": correlation,
                "created_at": self.now,
                "released_at": None,
            }
        )
        public_status: Literal["accepted", "rejected", "spam"] = (
            "accepted" if status in ("accepted", "discarded") else "rejected"
        )
        if status == "spam":
            public_status = "spam"
        return Outcome(submission_id, public_status, problems, dedupe_key, reason)

    async def flush(self, tx: Transaction[IngestRepository]) -> None:
        for topic, key, envelope in self.events:
            tx.emit(topic, key, envelope)
        await tx.store.add_submissions(self.rows)


def lead_event(
    workspace: str,
    submission_id: str,
    source: Literal["form", "webhook", "api"],
    source_id: str | None,
    lead: CleanLead,
    now: datetime,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> tuple[str, str, Envelope]:
    """`lead.captured` for the leads topic, keyed by the lead's identity."""
    envelope = PreparedEnvelope.prepare(
        LeadCaptured.event_type,
        lead_captured_data(submission_id, source, source_id, lead, now),
        source=SOURCE,
        workspace=workspace,
        subject=submission_id,
        correlationid=correlation_id,
        traceparent=traceparent,
    )
    return topics.LEADS, topics.contact_key(workspace, lead.dedupe_key), envelope


@dataclass(frozen=True)
class Signature:
    """The Standard Webhooks headers of a signed post."""

    webhook_id: str | None
    timestamp: str | None
    signature: str | None


async def verify_signed(
    secret: str, owner_id: str, signed: Signature, body: bytes, tx: Transaction[IngestRepository]
) -> datetime:
    """Check a Standard Webhooks signature and refuse a webhook-id seen before."""
    now = datetime.now(UTC)
    try:
        webhooks_domain.verify_signature(
            secret, signed.webhook_id, signed.timestamp, signed.signature, body, now
        )
    except webhooks_domain.SignatureRejected as exc:
        raise SignatureRejected(exc.message, reason=exc.code) from exc
    assert signed.webhook_id is not None  # verified above
    if not await tx.store.remember_webhook_message(owner_id, signed.webhook_id, now):
        raise WebhookReplayed(f"webhook-id {signed.webhook_id} was already received")
    return now


def parse_json(body: bytes) -> Any:
    """A JSON body within the door's limits (`shared.json_limits`), or 422 saying why not."""
    import orjson

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            "The body is not valid JSON.",
            errors=[{"field": "body", "code": "invalid_json", "message": str(exc)}],
        ) from exc
    try:
        check_json(document)
    except JsonLimitExceeded as exc:
        raise InvalidInput(
            exc.message,
            errors=[{"field": exc.path or "body", "code": exc.code, "message": exc.message}],
        ) from exc
    return document


# ---------------------------------------------------------------------------------------------
# Housekeeping


async def forget_expired(tx: Transaction[IngestRepository], now: datetime | None = None) -> None:
    """Drop idempotency keys past 24 h and webhook ids past twice the signature tolerance."""
    now = now or datetime.now(UTC)
    store = tx.store
    await store.forget_idempotency_keys(now - IDEMPOTENCY_TTL)
    await store.forget_webhook_messages(now - WEBHOOK_ID_TTL)
