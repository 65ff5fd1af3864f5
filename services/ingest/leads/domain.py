"""Pure rules of engagement events pushed over the API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.ingest.domain import FieldProblem, InvalidValue, normalise_currency, normalise_email
from shared.events.ingest import (
    ENGAGEMENT_TYPES,
    EmailClicked,
    Engagement,
    PageViewed,
    PurchaseCompleted,
)


def build_engagement(
    values: Mapping[str, Any], engagement_id: str, now: datetime, *, prefix: str = ""
) -> Engagement | tuple[FieldProblem, ...]:
    """A typed engagement payload, or every failing field; the person is an e-mail or an id."""
    problems: list[FieldProblem] = []
    kind = ENGAGEMENT_TYPES.get(str(values.get("type")))
    if kind is None:
        problems.append(
            FieldProblem(
                prefix + "type",
                "not_an_option",
                f"type must be one of {', '.join(sorted(ENGAGEMENT_TYPES))}",
            )
        )
    email: str | None = None
    if raw_email := values.get("email"):
        try:
            email = normalise_email(str(raw_email))
        except InvalidValue as exc:
            problems.append(FieldProblem(prefix + "email", exc.code, exc.message))
    contact_id = values.get("contact_id") or None
    if email is None and contact_id is None and not values.get("email"):
        problems.append(
            FieldProblem(
                prefix + "email", "identity_required", "an e-mail or contact_id is required"
            )
        )
    occurred_at = values.get("occurred_at") or now
    if isinstance(occurred_at, datetime) and occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    fields: dict[str, Any] = {
        "engagement_id": engagement_id,
        "email": email,
        "contact_id": contact_id,
        "occurred_at": occurred_at,
        "properties": dict(values.get("properties") or {}),
    }
    if values.get("url"):
        if kind in (PageViewed, EmailClicked):
            fields["url"] = values["url"]
        else:
            fields["properties"].setdefault("url", values["url"])
    if kind is PurchaseCompleted:
        amount = values.get("amount")
        if amount is None:
            problems.append(FieldProblem(prefix + "amount", "required", "amount is required"))
        elif Decimal(amount) < 0:
            problems.append(FieldProblem(prefix + "amount", "negative", "amount must be >= 0"))
        fields["amount"] = amount
        if not values.get("currency"):
            problems.append(FieldProblem(prefix + "currency", "required", "currency is required"))
        else:
            try:
                fields["currency"] = normalise_currency(str(values["currency"]))
            except InvalidValue as exc:
                problems.append(FieldProblem(prefix + "currency", exc.code, exc.message))
    if problems or kind is None:
        return tuple(problems)
    return kind(**fields)
