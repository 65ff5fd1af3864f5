"""Use cases of webhooks: senders registered, and their signed posts mapped onto leads."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.ingest import domain
from services.ingest.handlers import (
    Capture,
    IngestRepository,
    Outcome,
    Raw,
    Signature,
    parse_json,
    verify_signed,
)
from services.ingest.models import WebhookSource
from services.ingest.schemas import WebhookSourceCreate, WebhookSourceUpdate
from services.ingest.webhooks import domain as webhooks_domain
from shared.errors import NotFound
from shared.ids import prefixed
from shared.uow import Transaction


async def create_webhook_source(
    cmd: WebhookSourceCreate, workspace: str, tx: Transaction[IngestRepository]
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
    await tx.store.add_webhook_source(source)
    return source


async def get_webhook_source(
    source_id: str, workspace: str, tx: Transaction[IngestRepository]
) -> WebhookSource:
    source = await tx.store.webhook_source(source_id, workspace)
    if source is None:
        raise NotFound(f"no webhook source {source_id}")
    return source


async def update_webhook_source(
    source_id: str, cmd: WebhookSourceUpdate, workspace: str, tx: Transaction[IngestRepository]
) -> WebhookSource:
    source = await get_webhook_source(source_id, workspace, tx)
    for key, value in cmd.model_dump(exclude_unset=True).items():
        if key == "name" and value is None:
            continue
        setattr(source, key, value)
    source.updated_at = datetime.now(UTC)
    return source


async def delete_webhook_source(
    source_id: str, workspace: str, tx: Transaction[IngestRepository]
) -> None:
    source = await get_webhook_source(source_id, workspace, tx)
    source.deleted_at = datetime.now(UTC)


async def list_webhook_sources(
    workspace: str, tx: Transaction[IngestRepository]
) -> Sequence[WebhookSource]:
    return await tx.store.webhook_sources(workspace)


@dataclass(frozen=True)
class WebhookPost:
    source_id: str
    signed: Signature
    raw: Raw
    # Called with the source's workspace before any work: raises when its quota is spent.
    admit: Callable[[str], None] = lambda _: None


async def capture_webhook(cmd: WebhookPost, tx: Transaction[IngestRepository]) -> Outcome:
    """Verify a signed webhook, refuse a replayed id, map its payload and capture the lead."""
    source = await tx.store.webhook_source(cmd.source_id)
    if source is None:
        raise NotFound(f"no webhook source {cmd.source_id}")
    cmd.admit(source.workspace)
    now = await verify_signed(source.secret, source.id, cmd.signed, cmd.raw.body, tx)
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
    await capture.flush(tx)
    return outcome
