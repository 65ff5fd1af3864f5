"""Delivery use cases: record each attempt's outcome (sent, retried later, failed, bounced,
unknown) and emit the outcome events; mark crashed attempts unknown."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from services.notifier.channels.domain import (
    address_hash,
)
from services.notifier.delivery.domain import (
    Outcome,
    RetryPolicy,
)
from services.notifier.handlers import (
    Links,
    Outbox,
    emit_outcome,
    emit_sent,
    outcome_fields,
    set_subscription,
)
from services.notifier.store import Store
from shared.events.notifications import (
    NotificationFailed,
)

OUTCOMES = Counter("notifier_deliveries_total", "Delivery outcomes", ["kind", "outcome"])
UNKNOWN = Counter(
    "notifier_unknown_outcomes_total",
    "Deliveries that may or may not have reached the provider: the process died mid-send, a "
    "Slack post got no answer in time, or an SMTP DATA was cut off; never sent again",
)
NOT_RETRIED = (
    "it may have been delivered, so it is not sent again (neither Slack nor mail receivers"
    " dedupe a repeat)"
)

# ---------------------------------------------------------------------------------------------
# Recording attempts


@dataclass(frozen=True)
class Result:
    """One finished attempt: the claimed delivery (as the claim returned it) and its outcome."""

    delivery: Mapping[str, Any]
    outcome: Outcome
    finished_at: datetime


async def record_results(
    results: Sequence[Result],
    store: Store,
    outbox: Outbox,
    links: Links,
    policy: RetryPolicy,
    rng: random.Random,
    defer: bool = False,
) -> None:
    """Write each attempt's outcome: sent, retried later (durably, by `next_attempt_at`),
    failed, or bounced (failed, and the address suppressed for marketing). Emits the outcome
    events of deliveries that are done. `defer`: the outcomes are written with the outbox
    rows, at the end of the unit of work (see `Store.record_attempts`)."""
    changes, finished = [], []
    for result in results:
        row, outcome, now = result.delivery, result.outcome, result.finished_at
        number = int(row["attempts"])
        change: dict[str, Any] = {
            "id": row["id"],
            "status": "sent",
            "attempts": number,
            "reason": None,
            "next_attempt_at": None,
            "finished_at": now,
            "provider_message_id": outcome.provider_message_id,
            "updated_at": now,
        }
        if outcome.kind == "retry":
            first: datetime = row["first_attempt_at"] or now
            again = policy.next_attempt(first, now, number, rng, outcome.retry_after)
            if again is not None:
                change |= {
                    "status": "retrying",
                    "reason": outcome.detail,
                    "next_attempt_at": again,
                    "finished_at": None,
                }
            else:
                change |= {"status": "failed", "reason": f"gave up: {outcome.detail}"}
        elif outcome.kind in ("failed", "bounced"):
            change |= {"status": "failed", "reason": outcome.detail}
        elif outcome.kind == "unknown":
            change |= {"status": "unknown", "reason": f"{outcome.detail}: {NOT_RETRIED}"}
            UNKNOWN.inc()
        if outcome.kind == "bounced":
            change["reason"] = f"hard bounce: {outcome.detail}"
            await _bounce(row, store, outbox, links, now)
        changes.append(change)
        finished.append(
            {
                "delivery_id": row["id"],
                "number": number,
                "finished_at": now,
                "outcome": "failed" if outcome.kind == "bounced" else outcome.kind,
                "status_code": outcome.status_code,
                "response": outcome.detail[:2000] or None,
            }
        )
        OUTCOMES.labels(row["kind"], change["status"]).inc()
        _emit_done(outbox, row, change)
    await store.record_attempts(changes, finished, defer)


def _emit_done(outbox: Outbox, row: Mapping[str, Any], change: Mapping[str, Any]) -> None:
    if change["status"] == "sent":
        emit_sent(outbox, row, change["attempts"], change["provider_message_id"])
        return
    if change["status"] != "failed":
        return
    payload = NotificationFailed(
        **outcome_fields(row), reason=change["reason"], attempts=change["attempts"]
    )
    key = row["contact_id"] or row["idempotency_key"]
    emit_outcome(outbox, row["workspace"], key, payload, row["correlation_id"], row["traceparent"])


async def _bounce(
    row: Mapping[str, Any], store: Store, outbox: Outbox, links: Links, now: datetime
) -> None:
    """A permanent refusal of the address: suppress it, and tell contacts when it is the
    contact's own address."""
    recipient = row["recipient"]
    if not recipient:
        return
    await store.suppress(
        row["workspace"], address_hash(links.hash_key, recipient), "bounced", row["contact_id"], now
    )
    if row["contact_id"] and row["message"].get("to_contact"):
        set_subscription(outbox, row["workspace"], row["contact_id"], "bounced")


async def mark_unknown(rows: Sequence[Mapping[str, Any]], store: Store, now: datetime) -> None:
    """Deliveries whose process died mid-send: never sent again (that could double them);
    shown as `unknown` in the log and counted."""
    await store.update_deliveries(
        [
            {
                "id": r["id"],
                "status": "unknown",
                "reason": "the process stopped between sending and recording the answer",
                "next_attempt_at": None,
                "finished_at": now,
                "updated_at": now,
            }
            for r in rows
        ]
    )
    await store.finish_attempts(
        [
            {
                "delivery_id": r["id"],
                "number": r["attempts"],
                "finished_at": now,
                "outcome": "unknown",
                "status_code": None,
                "response": None,
            }
            for r in rows
        ]
    )
    UNKNOWN.inc(len(rows))
