"""Use cases of the quarantine: rejected and spam submissions listed, and released against
today's form definition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from services.ingest import domain
from services.ingest.domain import Accepted, Rejected, Verdict
from services.ingest.forms import domain as forms_domain
from services.ingest.forms.handlers import snapshot
from services.ingest.handlers import IngestRepository, PersonErased, lead_event, problems_as_dicts
from services.ingest.models import Submission
from services.ingest.schemas import LeadIn
from services.ingest.webhooks import domain as webhooks_domain
from shared.erasure import (
    digests,
    identities,
    replayed_after_erasure,
)
from shared.errors import Conflict, NotFound
from shared.uow import Transaction


async def list_quarantine(
    workspace: str,
    limit: int,
    tx: Transaction[IngestRepository],
    reason: str | None = None,
    source: str | None = None,
    before: tuple[datetime, str] | None = None,
) -> Sequence[Submission]:
    return await tx.store.quarantine(workspace, limit, reason, source, before)


@dataclass(frozen=True)
class Released:
    submission_id: str
    dedupe_key: str


async def release_submission(
    workspace: str, submission_id: str, tx: Transaction[IngestRepository]
) -> Released | Rejected:
    """Re-run a quarantined submission against today's form or mapping; publish it if valid.

    Releasing spam is an operator's judgement that it was not spam: the honeypot is skipped.
    """
    store = tx.store
    row = await store.submission(workspace, submission_id)
    if row is None:
        raise NotFound(f"no submission {submission_id}")
    if row.status not in ("rejected", "spam"):
        raise Conflict(f"submission {submission_id} is {row.status}, not in quarantine")
    verdict = await _rerun(row, tx)
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
    tx.emit(*lead_event(workspace, row.id, source, row.source_id, lead, now))
    await store.mark_submission(row.id, "released", dedupe_key=lead.dedupe_key, released_at=now)
    return Released(row.id, lead.dedupe_key)


async def _rerun(row: Submission, tx: Transaction[IngestRepository]) -> Verdict:
    store = tx.store
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
