"""ingest's use cases: capture, quarantine and release leads; manage forms and sources.

Handlers never commit: the caller opens the unit of work. An accepted lead's `lead.captured`
is written to the outbox in the same transaction as its submission row.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Table

from services.ingest import domain
from services.ingest.domain import Accepted, CleanLead, FieldProblem, Rejected, Spam, Verdict
from services.ingest.forms import domain as forms_domain
from services.ingest.leads import domain as leads_domain
from services.ingest.models import Form, IdempotencyKey, Submission, WebhookSource
from services.ingest.schemas import (
    RULE_KEYS,
    EngagementIn,
    FormCreate,
    FormSettings,
    FormUpdate,
    LeadIn,
    WebhookSourceCreate,
    WebhookSourceUpdate,
)
from services.ingest.store import SUBMISSIONS, store_of
from services.ingest.webhooks import domain as webhooks_domain
from shared.erasure import (
    digests,
    email_identity,
    identities,
    identity_digest,
    phone_identity,
    replayed_after_erasure,
)
from shared.errors import Conflict, DomainError, InvalidInput, NotFound, Unauthorized
from shared.events import topics
from shared.events.envelope import Envelope, PreparedEnvelope
from shared.events.ingest import LeadCaptured, lead_captured_data
from shared.ids import prefixed
from shared.json_limits import JsonLimitExceeded, check_json
from shared.uow import UnitOfWork, outbox_row

SOURCE = "/leadwire/ingest"
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
# Forms


@dataclass(frozen=True)
class FormSnapshot:
    """What the public endpoints need of a form, cacheable between requests."""

    id: str
    workspace: str
    version: int
    settings: FormSettings
    rules: forms_domain.FormRules
    signing_secret: str | None


def snapshot(form: Form) -> FormSnapshot:
    settings = FormSettings.model_validate(form.definition)
    rules = forms_domain.FormRules.model_validate(settings.model_dump(include=RULE_KEYS))
    return FormSnapshot(form.id, form.workspace, form.version, settings, rules, form.signing_secret)


def _invalid_from(exc: ValidationError) -> InvalidInput:
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "body",
            "code": e["type"],
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    return InvalidInput("The form definition is invalid.", errors=errors)


async def create_form(cmd: FormCreate, workspace: str, uow: UnitOfWork) -> Form:
    """A new form in the workspace."""
    now = datetime.now(UTC)
    form = Form(
        id=prefixed("frm"),
        workspace=workspace,
        name=cmd.name,
        definition=FormSettings.model_validate(cmd.model_dump()).model_dump(mode="json"),
        signing_secret=cmd.signing_secret,
        version=1,
        created_at=now,
        updated_at=now,
    )
    await store_of(uow).add_form(form)
    return form


async def get_form(form_id: str, workspace: str, uow: UnitOfWork) -> Form:
    form = await store_of(uow).form(form_id, workspace)
    if form is None:
        raise NotFound(f"no form {form_id}")
    return form


async def load_form(form_id: str, uow: UnitOfWork) -> FormSnapshot | None:
    """A live form by id, for the public endpoints (which know no workspace)."""
    form = await store_of(uow).form(form_id)
    return snapshot(form) if form is not None else None


async def update_form(form_id: str, cmd: FormUpdate, workspace: str, uow: UnitOfWork) -> Form:
    """Change a form; submissions are checked against the new definition from now on."""
    form = await get_form(form_id, workspace, uow)
    changes = cmd.model_dump(exclude_unset=True)
    if "name" in changes:
        if changes["name"] is None:
            raise InvalidInput(
                "name cannot be cleared",
                errors=[{"field": "name", "code": "required", "message": "name is required"}],
            )
        form.name = changes.pop("name")
    if "signing_secret" in changes:
        form.signing_secret = changes.pop("signing_secret")
    merged = {**form.definition, **cmd.model_dump(mode="json", include=set(changes))}
    try:
        form.definition = FormSettings.model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        raise _invalid_from(exc) from exc
    form.version += 1
    form.updated_at = datetime.now(UTC)
    return form


async def delete_form(form_id: str, workspace: str, uow: UnitOfWork) -> None:
    """Retire a form: its page and endpoint answer 404; its submissions are kept."""
    form = await get_form(form_id, workspace, uow)
    form.deleted_at = datetime.now(UTC)


async def list_forms(
    workspace: str, limit: int, after: str | None, uow: UnitOfWork
) -> Sequence[Form]:
    return await store_of(uow).forms(workspace, limit, after)


# ---------------------------------------------------------------------------------------------
# Webhook sources


async def create_webhook_source(
    cmd: WebhookSourceCreate, workspace: str, uow: UnitOfWork
) -> WebhookSource:
    """A new server-to-server source with its signing secret (generated unless given)."""
    now = datetime.now(UTC)
    source = WebhookSource(
        id=prefixed("whs"),
        workspace=workspace,
        name=cmd.name,
        secret=cmd.secret or webhooks_domain.new_secret(secrets.token_bytes(32)),
        mapping=cmd.mapping,
        default_region=cmd.default_region,
        created_at=now,
        updated_at=now,
    )
    await store_of(uow).add_webhook_source(source)
    return source


async def get_webhook_source(source_id: str, workspace: str, uow: UnitOfWork) -> WebhookSource:
    source = await store_of(uow).webhook_source(source_id, workspace)
    if source is None:
        raise NotFound(f"no webhook source {source_id}")
    return source


async def update_webhook_source(
    source_id: str, cmd: WebhookSourceUpdate, workspace: str, uow: UnitOfWork
) -> WebhookSource:
    source = await get_webhook_source(source_id, workspace, uow)
    for key, value in cmd.model_dump(exclude_unset=True).items():
        if key == "name" and value is None:
            continue
        setattr(source, key, value)
    source.updated_at = datetime.now(UTC)
    return source


async def delete_webhook_source(source_id: str, workspace: str, uow: UnitOfWork) -> None:
    source = await get_webhook_source(source_id, workspace, uow)
    source.deleted_at = datetime.now(UTC)


async def list_webhook_sources(workspace: str, uow: UnitOfWork) -> Sequence[WebhookSource]:
    return await store_of(uow).webhook_sources(workspace)


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
    transaction (`flush` through a unit of work, or `writes` for `shared.db.append_rows`)."""

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

    async def flush(self, uow: UnitOfWork) -> None:
        for topic, key, envelope in self.events:
            uow.emit(topic, key, envelope)
        await store_of(uow).add_submissions(self.rows)

    def writes(self, outbox: Table) -> list[tuple[Table, list[dict[str, Any]]]]:
        return [(SUBMISSIONS, self.rows), (outbox, [outbox_row(*e) for e in self.events])]


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


@dataclass(frozen=True)
class FormPost:
    """A post to a form's public endpoint, already parsed into multi-valued text."""

    form: FormSnapshot
    values: dict[str, list[str]]
    raw: Raw
    signed: Signature | None = None
    correlation_id: str | None = None
    # The request's trace: posts are judged and written by a writer task, outside the request.
    traceparent: str | None = None


async def _verify(
    secret: str, owner_id: str, signed: Signature, body: bytes, uow: UnitOfWork
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
    if not await store_of(uow).remember_webhook_message(owner_id, signed.webhook_id, now):
        raise WebhookReplayed(f"webhook-id {signed.webhook_id} was already received")
    return now


async def capture_form_submission(cmd: FormPost, uow: UnitOfWork) -> Outcome:
    """Check a form post against its form: accepted, rejected (quarantined) or spam."""
    if cmd.signed is not None and cmd.form.signing_secret:
        await _verify(cmd.form.signing_secret, cmd.form.id, cmd.signed, cmd.raw.body, uow)
    [outcome] = await capture_form_submissions([cmd], uow)
    return outcome


def judge_form_submissions(cmds: Sequence[FormPost]) -> tuple[list[Outcome], Capture]:
    """Each form post judged on its own (no I/O): the outcomes, and what to write."""
    capture = Capture()
    outcomes = [
        capture.record(
            cmd.form.workspace,
            "form",
            cmd.form.id,
            cmd.raw,
            cmd.values,
            forms_domain.check_form_submission(cmd.form.rules, cmd.values),
            correlation_id=cmd.correlation_id,
            traceparent=cmd.traceparent,
            region=cmd.form.rules.default_region,
        )
        for cmd in cmds
    ]
    return outcomes, capture


async def capture_form_submissions(cmds: Sequence[FormPost], uow: UnitOfWork) -> list[Outcome]:
    """Several form posts in one transaction (group commit); each is judged on its own."""
    outcomes, capture = judge_form_submissions(cmds)
    await capture.flush(uow)
    return outcomes


@dataclass(frozen=True)
class WebhookPost:
    source_id: str
    signed: Signature
    raw: Raw
    # Called with the source's workspace before any work: raises when its quota is spent.
    admit: Callable[[str], None] = lambda _: None


async def capture_webhook(cmd: WebhookPost, uow: UnitOfWork) -> Outcome:
    """Verify a signed webhook, refuse a replayed id, map its payload and capture the lead."""
    source = await store_of(uow).webhook_source(cmd.source_id)
    if source is None:
        raise NotFound(f"no webhook source {cmd.source_id}")
    cmd.admit(source.workspace)
    now = await _verify(source.secret, source.id, cmd.signed, cmd.raw.body, uow)
    payload = parse_json(cmd.raw.body)
    values = webhooks_domain.map_payload(payload, source.mapping)
    capture = Capture(now)
    verdict = domain.build_lead(values, source.default_region)
    outcome = capture.record(
        source.workspace,
        "webhook",
        source.id,
        cmd.raw,
        payload,
        verdict,
        region=source.default_region,
    )
    await capture.flush(uow)
    return outcome


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
# The leads API, with idempotency keys


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


async def capture_leads(cmd: LeadsPost, uow: UnitOfWork) -> Answer:
    """One lead or a batch, all or nothing; the same Idempotency-Key answers the same again."""
    store = store_of(uow)
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
    await capture.flush(uow)

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
    workspace: str, key: str, body: bytes, uow: UnitOfWork
) -> Answer | None:
    """After losing a race on a key: the winner's answer, or 409 for a different body."""
    seen = await store_of(uow).idempotency_key(workspace, key)
    if seen is None:
        return None
    if seen.request_hash != request_hash(body):
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return Answer(seen.status_code, seen.response, replayed=True)


# ---------------------------------------------------------------------------------------------
# Engagement


async def publish_engagement(
    workspace: str, events: Sequence[EngagementIn], uow: UnitOfWork
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
        uow.emit(topics.ENGAGEMENT, topics.contact_key(workspace, who), envelope)
    return [p.engagement_id for p in payloads]


# ---------------------------------------------------------------------------------------------
# Quarantine


async def list_quarantine(
    workspace: str,
    limit: int,
    uow: UnitOfWork,
    reason: str | None = None,
    source: str | None = None,
    before: tuple[datetime, str] | None = None,
) -> Sequence[Submission]:
    return await store_of(uow).quarantine(workspace, limit, reason, source, before)


@dataclass(frozen=True)
class Released:
    submission_id: str
    dedupe_key: str


async def release_submission(
    workspace: str, submission_id: str, uow: UnitOfWork
) -> Released | Rejected:
    """Re-run a quarantined submission against today's form or mapping; publish it if valid.

    Releasing spam is an operator's judgement that it was not spam: the honeypot is skipped.
    """
    store = store_of(uow)
    row = await store.submission(workspace, submission_id)
    if row is None:
        raise NotFound(f"no submission {submission_id}")
    if row.status not in ("rejected", "spam"):
        raise Conflict(f"submission {submission_id} is {row.status}, not in quarantine")
    verdict = await _rerun(row, uow)
    now = datetime.now(UTC)
    if isinstance(verdict, Rejected):
        await store.mark_submission(row.id, row.status, errors=problems_as_dicts(verdict.problems))
        return verdict
    assert isinstance(verdict, Accepted)
    lead = verdict.lead
    found = digests(workspace, identities(lead.email, lead.phone))
    erased = await store.erasures(workspace, found)
    if replayed_after_erasure(row.created_at, found, erased):
        raise PersonErased(
            f"submission {submission_id} names a person erased after it came in; "
            "only a new submission can capture them again"
        )
    source: Literal["form", "webhook", "api"] = row.source  # type: ignore[assignment]
    uow.emit(*lead_event(workspace, row.id, source, row.source_id, lead, now))
    await store.mark_submission(row.id, "released", dedupe_key=lead.dedupe_key, released_at=now)
    return Released(row.id, lead.dedupe_key)


async def _rerun(row: Submission, uow: UnitOfWork) -> Verdict:
    store = store_of(uow)
    if row.source == "form":
        form = await store.form(row.source_id or "", row.workspace)
        if form is None:
            raise Conflict("the submission's form no longer exists")
        values: Mapping[str, list[str]] = row.data
        return forms_domain.check_form_submission(snapshot(form).rules, values, skip_honeypot=True)
    if row.source == "webhook":
        source = await store.webhook_source(row.source_id or "", row.workspace)
        if source is None:
            raise Conflict("the submission's webhook source no longer exists")
        values_ = webhooks_domain.map_payload(row.data, source.mapping)
        return domain.build_lead(values_, source.default_region)
    lead = LeadIn.model_validate(row.data)
    return domain.build_lead(lead.values(), None)


# ---------------------------------------------------------------------------------------------
# Housekeeping


async def forget_expired(uow: UnitOfWork, now: datetime | None = None) -> None:
    """Drop idempotency keys past 24 h and webhook ids past twice the signature tolerance."""
    now = now or datetime.now(UTC)
    store = store_of(uow)
    await store.forget_idempotency_keys(now - IDEMPOTENCY_TTL)
    await store.forget_webhook_messages(now - WEBHOOK_ID_TTL)
