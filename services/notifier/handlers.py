"""notifier's common use cases: workspace settings, the contact projection, erasure and
unsubscribe; and what the area handlers share (links, errors, the outbox protocol)."""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.notifier.channels.domain import (
    ConfigProblem,
    address_hash,
)
from services.notifier.delivery.domain import (
    parse_quiet_hours,
)
from services.notifier.models import Delivery, Suppression
from services.notifier.schemas import WorkspaceSettingsIn
from services.notifier.store import Store
from shared import signed_links
from shared.errors import DomainError, InvalidInput, NotFound
from shared.events import topics
from shared.events.contact_commands import SetSubscriptionStatus
from shared.events.envelope import Envelope, EventPayload, encode_envelope, source_of
from shared.events.notifications import NotificationSent
from shared.ids import event_id
from shared.logs import correlation_id_var
from shared.tracing import traceparent_for

SOURCE = source_of("notifier")


class Outbox(Protocol):
    def emit(self, topic: str, key: str, envelope: Envelope) -> None: ...
    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None: ...


@dataclass(frozen=True)
class Links:
    """How notifier builds public links and keyed hashes."""

    public_url: str  # notifier's public base (unsubscribe)
    tracking_url: str  # ingest's public base (open pixel, click redirect)
    contact_url: str  # a link back to a contact, `{contact_id}` substituted
    link_secret: bytes
    log_fallback: bool = False

    @property
    def hash_key(self) -> bytes:
        return signed_links.link_key(self.link_secret, "unsubscribe") + b":address"


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class TemplateNotFound(NotFound):
    code = "template_not_found"


class NotificationNotFound(NotFound):
    code = "notification_not_found"


class SuppressionNotFound(NotFound):
    code = "suppression_not_found"


class InvalidToken(DomainError):
    status_code = 404
    code = "invalid_link"


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_secrets.token_hex(10)}"


def problems_error(problems: Sequence[ConfigProblem], message: str) -> InvalidInput:
    return InvalidInput(
        message,
        errors=[{"field": p.field, "code": p.code, "message": p.message} for p in problems],
    )


def outcome_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What every outcome event (sent, failed, suppressed) says of its delivery."""
    return {
        "notification_id": row["id"],
        "idempotency_key": row["idempotency_key"],
        "contact_id": row["contact_id"],
        "channel": row["channel"],
        "kind": row["kind"],
    }


def emit_outcome(
    outbox: Outbox,
    workspace: str,
    key: str,
    payload: EventPayload,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> None:
    """A delivery's outcome event, under its request's correlation id and in its trace."""
    outbox.emit(
        topics.NOTIFICATIONS,
        topics.contact_key(workspace, key),
        Envelope.of(
            payload,
            source=SOURCE,
            workspace=workspace,
            subject=key,
            correlationid=correlation_id,
            traceparent=traceparent,
        ),
    )


def emit_sent(
    outbox: Outbox, row: Mapping[str, Any], attempts: int, provider_message_id: str | None
) -> None:
    """`notification.sent` on the hot path (one per message): the bytes `emit_outcome` gives
    for a `NotificationSent` (a test holds the two equal), encoded without a model and an
    envelope per event."""
    fields = outcome_fields(row) | {
        "attempts": attempts,
        "provider_message_id": provider_message_id,
    }
    data = {name: value for name, value in fields.items() if value is not None}
    workspace, key = row["workspace"], row["contact_id"] or row["idempotency_key"]
    correlationid = row["correlation_id"] or correlation_id_var.get() or event_id()
    eid = event_id()
    payload = encode_envelope(
        NotificationSent.event_type,
        data,
        event_id=eid,
        source=SOURCE,
        workspace=workspace,
        subject=key,
        correlationid=correlationid,
        time=datetime.now(UTC),
        traceparent=row["traceparent"] or traceparent_for(correlationid),
    )
    outbox.emit_encoded(topics.NOTIFICATIONS, topics.contact_key(workspace, key), eid, payload)


# ---------------------------------------------------------------------------------------------
# Workspace settings


async def save_settings(
    workspace: str, data: WorkspaceSettingsIn, store: Store, now: datetime
) -> dict[str, Any]:
    values = data.model_dump(mode="json")
    try:
        parse_quiet_hours(values.get("quiet_hours"))
    except ValueError as exc:
        raise InvalidInput(
            str(exc), errors=[{"field": "quiet_hours", "code": "invalid", "message": str(exc)}]
        ) from exc
    await store.save_workspace_settings(workspace, values, now)
    return values


async def read_settings(workspace: str, store: Store) -> dict[str, Any]:
    return WorkspaceSettingsIn.model_validate(await store.workspace_settings(workspace)).model_dump(
        mode="json"
    )


def owner_of(
    settings: Mapping[str, Any], contact: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    owner_id = contact.get("owner_id") if contact else None
    if not owner_id:
        return None
    known = (settings.get("owners") or {}).get(owner_id) or {}
    return {"id": owner_id, **known}


# ---------------------------------------------------------------------------------------------
# Contact projection


async def project_contacts(
    workspace: str, snapshots: Sequence[Mapping[str, Any]], store: Store, now: datetime
) -> int:
    """Keep the newest snapshot of each contact, for rendering and recipients. Deliveries
    that were waiting for one of these contacts are due now; returns how many."""
    return await store.upsert_contacts(projection_rows([(workspace, s) for s in snapshots]), now)


def projection_rows(
    snapshots: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """The projection rows of (workspace, snapshot) pairs in arrival order: the newest
    snapshot of each contact (one row each, as an upsert needs)."""
    newest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for workspace, snap in snapshots:
        newest[(workspace, str(snap["id"]))] = snap
    return [
        {
            "workspace": workspace,
            "id": cid,
            "snapshot": dict(snap),
            "updated_at": datetime.fromisoformat(str(snap["updated_at"])),
        }
        for (workspace, cid), snap in newest.items()
    ]


async def erase_contact(workspace: str, contact_id: str, store: Store) -> None:
    """`contact.deleted`: the projection, deliveries and attempts go; suppressions stay under
    the keyed hash of the address only, so an erased person who unsubscribed is not mailed
    again if re-imported."""
    await store.erase_contact(workspace, contact_id)


async def erase_projection(workspace: str, contact_id: str, store: Store) -> None:
    """A contact merged into another: its projection goes (the survivor's snapshot follows)."""
    await store.erase_projection(workspace, contact_id)


# ---------------------------------------------------------------------------------------------
# Unsubscribe and the delivery log


async def unsubscribe(
    token: str, store: Store, outbox: Outbox, links: Links, now: datetime
) -> None:
    """One-click unsubscribe: suppress the address for marketing mail and tell contacts."""
    claims = signed_links.verify(links.link_secret, "unsubscribe", token)
    if (
        claims is None
        or not isinstance(claims.get("w"), str)
        or not isinstance(claims.get("h"), str)
    ):
        raise InvalidToken("this unsubscribe link is not valid")
    workspace, contact_id = claims["w"], claims.get("c")
    await store.suppress(workspace, claims["h"], "unsubscribed", contact_id, now)
    if contact_id:
        set_subscription(outbox, workspace, str(contact_id), "unsubscribed")


def normalised_email(email: str) -> str:
    """An address as notifier keys its suppressions (see `address_hash`)."""
    return email.strip().lower()


async def add_suppression(
    workspace: str,
    email: str,
    reason: str,
    detail: str | None,
    store: Store,
    outbox: Outbox,
    links: Links,
    now: datetime,
) -> Suppression:
    """Record an address that gets no more marketing mail (idempotent: the latest reason
    wins). A complaint or an unsubscribe also tells contacts, as the one-click unsubscribe
    does, for each contact whose own address it is."""
    address = normalised_email(email)
    hashed = address_hash(links.hash_key, address)
    contact_ids = await store.contact_ids_by_email(workspace, address)
    contact_id = contact_ids[0] if len(contact_ids) == 1 else None
    await store.suppress(workspace, hashed, reason, contact_id, now, detail)
    if reason in ("complained", "unsubscribed"):
        for cid in contact_ids:
            set_subscription(outbox, workspace, cid, "unsubscribed")
    found = await store.suppression(workspace, hashed)
    assert found is not None  # written just above, in this unit of work
    return found


async def find_suppression(
    workspace: str, email: str, store: Store, links: Links
) -> Suppression | None:
    return await store.suppression(workspace, address_hash(links.hash_key, email))


async def lift_suppression(workspace: str, email: str, store: Store, links: Links) -> None:
    """The address may get marketing mail again (a person who subscribed again)."""
    if not await store.lift_suppression(workspace, address_hash(links.hash_key, email)):
        raise SuppressionNotFound("no suppression of this address")


def check_unsubscribe_token(token: str, links: Links) -> bool:
    return signed_links.verify(links.link_secret, "unsubscribe", token) is not None


async def get_notification(workspace: str, delivery_id: str, store: Store) -> Delivery:
    delivery = await store.delivery(workspace, delivery_id)
    if delivery is None:
        raise NotificationNotFound(f"notification {delivery_id} not found")
    return delivery


def set_subscription(outbox: Outbox, workspace: str, contact_id: str, status: str) -> None:
    """Tell contacts (`contact.set_subscription_status`) what happened to the address."""
    command = SetSubscriptionStatus(contact_id=contact_id, status=status)
    outbox.emit(
        topics.CONTACT_COMMANDS,
        topics.contact_key(workspace, contact_id),
        Envelope.of(command, source=SOURCE, workspace=workspace, subject=contact_id),
    )


# ---------------------------------------------------------------------------------------------
# A person's data, for contacts' export (see shared.export)


async def export_person(
    workspace: str, contact_ids: Sequence[str], store: Store, links: Links
) -> dict[str, Any]:
    """Everything notifier holds on a person: the contact as projected here, every message to
    or about them with its attempts (content, recipient, provider answers), and the
    suppressions naming them or one of their addresses."""
    projected = await store.contacts(workspace, list(contact_ids))
    deliveries = await store.person_deliveries(workspace, list(contact_ids))
    attempts = await store.attempts_of([d.id for d in deliveries])
    addresses = {str(s["email"]).lower() for s in projected.values() if s.get("email")}
    addresses |= {d.recipient.lower() for d in deliveries if d.kind == "email" and d.recipient}
    hashes = [address_hash(links.hash_key, a) for a in sorted(addresses)]
    suppressions = await store.person_suppressions(workspace, list(contact_ids), hashes)
    return {
        "contacts": [projected[cid] for cid in contact_ids if cid in projected],
        "notifications": [
            {
                "id": d.id,
                "idempotency_key": d.idempotency_key,
                "contact_id": d.contact_id,
                "channel": d.channel,
                "kind": d.kind,
                "purpose": d.purpose,
                "recipient": d.recipient,
                "status": d.status,
                "reason": d.reason,
                "message": d.message,
                "provider_message_id": d.provider_message_id,
                "created_at": d.created_at.isoformat(),
                "finished_at": d.finished_at.isoformat() if d.finished_at else None,
                "attempts": [
                    {
                        "number": a.number,
                        "started_at": a.started_at.isoformat(),
                        "finished_at": a.finished_at.isoformat() if a.finished_at else None,
                        "outcome": a.outcome,
                        "status_code": a.status_code,
                        "response": a.response,
                    }
                    for a in attempts.get(d.id, [])
                ],
            }
            for d in deliveries
        ],
        "suppressions": [
            {
                "reason": s.reason,
                "contact_id": s.contact_id,
                "created_at": s.created_at.isoformat(),
            }
            for s in suppressions
        ],
    }
