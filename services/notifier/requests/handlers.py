"""Accepting notification requests: each new idempotency key recorded as a delivery
(a known key is a no-op), its channel, contact and recipient resolved, the marketing policy
applied and its message rendered, so the delivery worker sends what is queued."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any, Protocol
from urllib.parse import quote

from services.notifier.channels.domain import (
    address_hash,
)
from services.notifier.delivery.domain import (
    contact_recheck_at,
    marketing_decision,
    parse_quiet_hours,
)
from services.notifier.delivery.handlers import OUTCOMES
from services.notifier.handlers import (
    Links,
    Outbox,
    emit_outcome,
    new_id,
    outcome_fields,
    owner_of,
)
from services.notifier.models import Channel
from services.notifier.store import Store
from services.notifier.templates.domain import (
    Rendered,
    RenderFailed,
    TemplateSource,
    add_open_pixel,
    default_blocks,
    html_from_text,
    render,
    rewrite_links,
    variables_for,
)
from services.notifier.templates.handlers import template_source
from shared import signed_links
from shared.events.notifications import (
    NotificationFailed,
    NotificationRequested,
    NotificationSuppressed,
)

# How long a request for a contact the projection does not know yet waits for it: the
# contact's own event may still be on its way on another topic.
CONTACT_WAIT = timedelta(seconds=60)
VIRTUAL_LOG = frozenset({"slack", "email", "log"})

# ---------------------------------------------------------------------------------------------
# Accepting requests


@dataclass(frozen=True)
class Request:
    """A `notification.requested` with where it came from."""

    workspace: str
    payload: NotificationRequested
    correlation_id: str | None = None
    # The trace its outcome events continue (the span that handled the request).
    traceparent: str | None = None


class Admit(Protocol):
    """The delivery worker's say on which just-prepared deliveries start at once: it marks
    each one it takes as started (`sending`, its attempt numbered) and returns their ids; their
    attempt is recorded in the accepting transaction and they are sent once it commits."""

    def __call__(
        self, rows: Sequence[dict[str, Any]], channels: Mapping[str, Channel]
    ) -> set[str]: ...


@dataclass
class Accepted:
    """What one accepting transaction recorded."""

    ids: list[str] = field(default_factory=list)
    # Deliveries whose first attempt this transaction recorded: to send once it commits.
    started: list[dict[str, Any]] = field(default_factory=list)
    # When the earliest of the new deliveries left queued for the worker's claim (paced, held,
    # waiting for a contact) is due: the worker is woken then, not at its next poll.
    due_at: datetime | None = None


async def accept_requests(
    requests: Sequence[Request],
    store: Store,
    outbox: Outbox,
    links: Links,
    now: datetime,
    admit: Admit | None = None,
    defer: bool = False,
) -> Accepted:
    """Record each new request as a delivery (a known idempotency key is a no-op), render it
    and apply policy. Deliveries `admit` takes have their first attempt recorded here; the
    worker claims the rest. With `defer`, the deliveries are written at commit and a known
    key fails the commit instead (`insert_deliveries`): for a first try, which the caller
    repeats without `defer` if it fails."""
    accepted = Accepted()
    by_workspace: dict[str, list[Request]] = {}
    for request in requests:
        by_workspace.setdefault(request.workspace, []).append(request)
    for workspace, group in by_workspace.items():
        rows: dict[str, dict[str, Any]] = {}
        for request in group:
            # A key already recorded (another event, another replica) is skipped by the
            # insert itself: no read for it before.
            rows.setdefault(request.payload.idempotency_key, _new_row(request, now))
        fresh = list(rows.values())
        channels = await prepare(workspace, fresh, store, links, now)
        startable = [r for r in fresh if r["status"] == "queued" and r["prepared"]]
        startable = [r for r in startable if r["reason"] is None]
        started = admit(startable, channels) if admit is not None and startable else set()
        inserted = await store.insert_deliveries(fresh, defer)
        begun = []
        for row in fresh:
            if row["id"] not in inserted:
                continue
            accepted.ids.append(row["id"])
            if row["id"] in started:
                begun.append(row)
            elif row["status"] == "queued":
                due = row["next_attempt_at"]
                accepted.due_at = due if accepted.due_at is None else min(accepted.due_at, due)
            _emit_final(outbox, row)
        accepted.started.extend(begun)
    return accepted


def _new_row(request: Request, now: datetime) -> dict[str, Any]:
    payload = request.payload
    return {
        "id": new_id("ntf"),
        "workspace": request.workspace,
        "idempotency_key": payload.idempotency_key,
        "contact_id": payload.contact_id,
        "channel_id": None,
        "channel": payload.channel,
        "kind": "log",
        "purpose": payload.purpose,
        "recipient": None,
        "status": "queued",
        "prepared": False,
        "reason": None,
        "attempts": 0,
        "message": {"request": payload.model_dump(mode="json")},
        "provider_message_id": None,
        "correlation_id": request.correlation_id,
        "traceparent": request.traceparent,
        "requested_by": payload.requested_by,
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": now,
        "claimed_at": None,
        "first_attempt_at": None,
        "finished_at": None,
        "held_by": None,
        "held_until": None,
    }


def _fail(row: dict[str, Any], status: str, reason: str, now: datetime) -> None:
    row.update(status=status, reason=reason, prepared=True, finished_at=now, next_attempt_at=None)


async def prepare(
    workspace: str, rows: Sequence[dict[str, Any]], store: Store, links: Links, now: datetime
) -> dict[str, Channel]:
    """Resolve channel, contact and recipient, apply the marketing policy and render, in
    place: each row ends prepared (queued, held, failed or suppressed) or, when its contact is
    not yet known, waiting a moment for it. Returns the rows' channels by id."""
    if not rows:
        return {}
    requests = [NotificationRequested.model_validate(r["message"]["request"]) for r in rows]
    reads = await store.intake_reads(
        workspace, [r["contact_id"] for r in rows if r["contact_id"]], [r.channel for r in requests]
    )
    settings, contacts, channels = reads.settings, reads.contacts, reads.channels
    staged: list[tuple[dict[str, Any], NotificationRequested, Channel | None, Any]] = []
    for row, request in zip(rows, requests, strict=True):
        channel = channels.get(request.channel)
        if channel is None and not (links.log_fallback and request.channel in VIRTUAL_LOG):
            _fail(row, "failed", f"unknown_channel: no channel {request.channel!r}", now)
            continue
        row["channel_id"] = channel.id if channel else None
        row["kind"] = channel.kind if channel else "log"
        contact = contacts.get(request.contact_id) if request.contact_id else None
        if request.contact_id and contact is None:
            if now - row["created_at"] < CONTACT_WAIT:
                row.update(
                    reason="waiting for the contact",
                    next_attempt_at=contact_recheck_at(row["created_at"], now),
                )
                continue
            _fail(row, "failed", f"unknown_contact: {request.contact_id}", now)
            continue
        recipient = _recipient(row["kind"], request, contact, settings)
        if isinstance(recipient, _NoRecipient):
            _fail(row, "failed", recipient.reason, now)
            continue
        row["recipient"] = recipient
        staged.append((row, request, channel, contact))
    await _apply_policy(workspace, staged, settings, store, links, now)
    templates: dict[str, TemplateSource | None] = {}
    for row, request, channel, contact in staged:
        if row["status"] != "queued":
            continue
        name = request.template
        if name and name not in templates:
            found = await store.template(workspace, name)
            templates[name] = template_source(found) if found else None
        try:
            row["message"] = _compose(
                workspace,
                row,
                request,
                channel,
                contact,
                templates.get(name) if name else None,
                settings,
                links,
            )
        except RenderFailed as exc:
            _fail(row, "failed", f"render_failed: {exc}", now)
            continue
        except _NoContent as exc:
            _fail(row, "failed", str(exc), now)
            continue
        row["prepared"] = True
        if row["reason"] is None:
            row["next_attempt_at"] = now
    return {c.id: c for c in channels.values()}


@dataclass(frozen=True)
class _NoRecipient:
    reason: str


class _NoContent(Exception):
    pass


def _recipient(
    kind: str,
    request: NotificationRequested,
    contact: Mapping[str, Any] | None,
    settings: Mapping[str, Any],
) -> str | _NoRecipient | None:
    wanted = request.recipient
    if wanted == "owner":
        owner = owner_of(settings, contact)
        if owner is None:
            return _NoRecipient("no_recipient: the contact has no owner")
        address = owner.get("email") if kind == "email" else owner.get("slack")
        if kind in ("email", "slack") and not address:
            return _NoRecipient(f"no_recipient: owner {owner['id']} has no {kind} address")
        return str(address) if address else None
    if kind == "email":
        address = wanted or (contact or {}).get("email")
        if not address:
            return _NoRecipient("no_recipient: no e-mail address")
        if "@" not in str(address):
            return _NoRecipient(f"no_recipient: {address!r} is not an e-mail address")
        return str(address)
    return wanted


async def _apply_policy(
    workspace: str,
    staged: Sequence[tuple[dict[str, Any], NotificationRequested, Channel | None, Any]],
    settings: Mapping[str, Any],
    store: Store,
    links: Links,
    now: datetime,
) -> None:
    """Marketing e-mail only: suppression, the per-contact daily cap, quiet hours."""
    marketing = [s for s in staged if s[0]["kind"] == "email" and s[0]["purpose"] == "marketing"]
    if not marketing:
        return
    hashes = {id(s[0]): address_hash(links.hash_key, s[0]["recipient"]) for s in marketing}
    suppressed = await store.suppressions(workspace, list(hashes.values()))
    counts = await store.marketing_sent_since(
        workspace,
        [s[0]["contact_id"] for s in marketing if s[0]["contact_id"]],
        now - timedelta(hours=24),
    )
    cap = int(settings.get("marketing_daily_cap", 3))
    quiet = parse_quiet_hours(settings.get("quiet_hours"))
    taken: dict[str, int] = {}
    for row, _, _, contact in marketing:
        own_address = (
            contact is not None
            and str(contact.get("email") or "").lower() == str(row["recipient"]).lower()
        )
        cid = row["contact_id"]
        sent = counts.get(cid, 0) + taken.get(cid, 0) if cid else 0
        decision = marketing_decision(
            suppression=suppressed.get(hashes[id(row)]),
            subscription_status=contact.get("subscription_status") if own_address else None,
            sent_last_24h=sent,
            daily_cap=cap,
            quiet_hours=quiet,
            now=now,
        )
        if decision.suppress:
            _fail(row, "suppressed", decision.suppress, now)
        elif cid:
            taken[cid] = taken.get(cid, 0) + 1
        if decision.hold_until:
            row.update(next_attempt_at=decision.hold_until, reason="held for quiet hours")


def _compose(
    workspace: str,
    row: dict[str, Any],
    request: NotificationRequested,
    channel: Channel | None,
    contact: Mapping[str, Any] | None,
    template: TemplateSource | None,
    settings: Mapping[str, Any],
    links: Links,
) -> dict[str, Any]:
    """The message to send, rendered now (so a retry sends exactly the same thing)."""
    kind = row["kind"]
    marketing_mail = kind == "email" and request.purpose == "marketing"
    unsubscribe_url = None
    if marketing_mail:
        token = signed_links.sign(
            links.link_secret,
            "unsubscribe",
            {
                "w": workspace,
                "h": address_hash(links.hash_key, row["recipient"]),
                "c": row["contact_id"],
            },
        )
        unsubscribe_url = f"{links.public_url}/v1/unsubscribe/{token}"
    contact_url = (
        links.contact_url.format(contact_id=quote(row["contact_id"], safe=""))
        if row["contact_id"]
        else None
    )
    values = variables_for(
        contact,
        owner_of(settings, contact),
        request.variables,
        workspace=workspace,
        unsubscribe_url=unsubscribe_url,
        contact_url=contact_url,
    )
    if request.template:
        if template is None:
            raise _NoContent(f"unknown_template: no template {request.template!r}")
        rendered = render(template, values)
    elif request.content:
        rendered = literal_content(request.content)
    else:
        raise _NoContent("no_content: neither a template nor content")
    message: dict[str, Any] = rendered.as_dict()
    text = rendered.text or rendered.subject or ""
    message["text"] = text
    if kind == "slack":
        message["blocks"] = rendered.blocks or default_blocks(text, values)
    elif kind == "email":
        from_address = str((channel.config if channel else {}).get("from_address", "x@localhost"))
        message["message_id"] = make_msgid(domain=from_address.rpartition("@")[2] or None)
        contact_email = str((contact or {}).get("email") or "").lower()
        message["to_contact"] = contact_email == str(row["recipient"]).lower()
        if unsubscribe_url:
            message["unsubscribe_url"] = unsubscribe_url
        # Mail written as text still goes out as multipart, with an HTML part derived from it.
        html = rendered.html or (html_from_text(rendered.text) if rendered.text else None)
        if html:
            message["html"] = html
        if marketing_mail and html and settings.get("tracking", True):
            message["html"] = _tracked(workspace, row, html, links, unsubscribe_url)
    elif kind == "webhook":
        message["payload"] = {
            "notification_id": row["id"],
            "idempotency_key": row["idempotency_key"],
            "contact_id": row["contact_id"],
            "contact": dict(contact) if contact else None,
            "content": rendered.as_dict(),
            "body": request.content.get("json"),
            "variables": request.variables,
        }
    return message


def literal_content(content: Mapping[str, Any]) -> Rendered:
    """Inline content is final: its sender rendered it (workflows renders its own steps), so
    it is not run through a template a second time, where text a contact typed could act as
    template code."""
    parts = {name: content.get(name) for name in ("subject", "html", "text")}
    for name, value in parts.items():
        if value is not None and not isinstance(value, str):
            raise _NoContent(f"invalid_content: `{name}` must be text")
    blocks = content.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        raise _NoContent("invalid_content: `blocks` must be a list")
    if not any(parts.values()) and not blocks and "json" not in content:
        raise _NoContent("no_content: the content has no subject, html, text, blocks or json")
    return Rendered(parts["subject"], parts["html"], parts["text"], blocks)


def _tracked(
    workspace: str, row: Mapping[str, Any], html: str, links: Links, unsubscribe_url: str | None
) -> str:
    claims = {"w": workspace, "c": row["contact_id"], "d": row["id"]}

    def tracked(url: str) -> str:
        if url == unsubscribe_url:
            return url
        token = signed_links.sign(links.link_secret, "click", claims | {"u": url})
        return f"{links.tracking_url}/v1/t/c/{token}"

    pixel = signed_links.sign(links.link_secret, "open", claims)
    return add_open_pixel(rewrite_links(html, tracked), f"{links.tracking_url}/v1/t/o/{pixel}")


def _emit_final(outbox: Outbox, row: Mapping[str, Any]) -> None:
    """The outcome event of a delivery that ended without an attempt (failed, suppressed)."""
    common = outcome_fields(row)
    key = row["contact_id"] or row["idempotency_key"]
    if row["status"] == "failed":
        OUTCOMES.labels(row["kind"], "failed").inc()
        emit_outcome(
            outbox,
            row["workspace"],
            key,
            NotificationFailed(**common, reason=row["reason"] or "", attempts=row["attempts"]),
            row["correlation_id"],
            row["traceparent"],
        )
    elif row["status"] == "suppressed":
        OUTCOMES.labels(row["kind"], "suppressed").inc()
        emit_outcome(
            outbox,
            row["workspace"],
            key,
            NotificationSuppressed(**common, reason=row["reason"] or ""),
            row["correlation_id"],
            row["traceparent"],
        )


async def prepare_waiting(
    rows: Sequence[Mapping[str, Any]], store: Store, outbox: Outbox, links: Links, now: datetime
) -> datetime | None:
    """Another look at deliveries whose contact was not yet known; returns when the next
    look at those still waiting is due."""
    columns = (
        "channel_id",
        "kind",
        "recipient",
        "status",
        "prepared",
        "reason",
        "message",
        "next_attempt_at",
        "finished_at",
    )
    by_workspace: dict[str, list[dict[str, Any]]] = {}
    for delivery in rows:
        by_workspace.setdefault(delivery["workspace"], []).append(dict(delivery))
    changes = []
    again: datetime | None = None
    for workspace, group in by_workspace.items():
        await prepare(workspace, group, store, links, now)
        for row in group:
            changes.append({"id": row["id"], "updated_at": now} | {c: row[c] for c in columns})
            _emit_final(outbox, row)
            if row["status"] == "queued" and not row["prepared"]:
                due = row["next_attempt_at"]
                again = due if again is None else min(again, due)
    await store.update_deliveries(changes)
    return again
