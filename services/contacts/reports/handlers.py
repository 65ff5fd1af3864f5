"""Use cases of the reports: data quality, the lifecycle funnel and churn."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.duplicates.handlers import DuplicatesRepository, list_duplicates
from services.contacts.reports import domain as reports_domain
from shared.uow import Transaction


class ReportsRepository(DuplicatesRepository, Protocol):
    """The repository as the reports use it."""

    async def churned_between(
        self, workspace: str, start: datetime, end: datetime
    ) -> list[tuple[str, str | None, str | None]]: ...

    async def customers_at(self, workspace: str, moment: datetime) -> int: ...

    async def missing_custom(
        self, workspace: str, name: str, samples: int
    ) -> tuple[int, list[str]]: ...

    async def missing_identity(self, workspace: str, samples: int) -> tuple[int, list[str]]: ...

    async def recent_custom_fields(
        self, workspace: str, limit: int
    ) -> list[tuple[str, dict[str, Any]]]: ...

    async def stage_counts(self, workspace: str) -> dict[str, int]: ...

    async def stage_entries(
        self, workspace: str, start: datetime, end: datetime
    ) -> dict[str, int]: ...

    async def stale(
        self, workspace: str, now: datetime, days: int, samples: int
    ) -> tuple[int, list[str]]: ...

    async def unsubscribed(self, workspace: str, samples: int) -> tuple[int, list[str]]: ...


async def data_quality(
    workspace: str,
    stale_days: int,
    tx: Transaction[ReportsRepository],
    now: datetime,
    samples: int = 5,
) -> dict[str, Any]:
    """Counts and samples of contacts missing required fields, with invalid values, duplicate
    candidates, stale (no interaction for `stale_days`), unsubscribed or bounced."""
    store = tx.store
    definitions = await store.field_definitions(workspace)

    def section(found: tuple[int, list[str]]) -> dict[str, Any]:
        return {"count": found[0], "sample": found[1]}

    missing = {"email_or_phone": section(await store.missing_identity(workspace, samples))}
    for d in definitions.values():
        if d.required:
            missing[d.name] = section(await store.missing_custom(workspace, d.name, samples))
    scanned = await store.recent_custom_fields(workspace, 10_000)
    invalid = [
        (contact_id, errors)
        for contact_id, values in scanned
        if (errors := domain.invalid_custom_values(values, definitions))
    ]
    duplicates = await list_duplicates(workspace, tx)
    return {
        "missing_required": missing,
        "invalid_values": {
            "count": len(invalid),
            "scanned": len(scanned),
            "sample": [{"contact_id": c, "errors": e} for c, e in invalid[:samples]],
        },
        "duplicate_candidates": {
            "count": len(duplicates),
            "sample": [d["contact_ids"] for d in duplicates[:samples]],
        },
        "stale": {"days": stale_days}
        | section(await store.stale(workspace, now, stale_days, samples)),
        "unsubscribed": section(await store.unsubscribed(workspace, samples)),
    }


async def funnel_report(
    workspace: str, start: datetime, end: datetime, tx: Transaction[ReportsRepository]
) -> dict[str, Any]:
    """Contacts per lifecycle stage now, and how many entered each stage in the period with
    the conversion between consecutive stages."""
    store = tx.store
    current = await store.stage_counts(workspace)
    entered = await store.stage_entries(workspace, start, end)
    return {
        "start": start,
        "end": end,
        "stages": [
            {"stage": s, "contacts": current.get(s, 0), "entered_in_period": entered.get(s, 0)}
            for s in domain.LIFECYCLE_STAGES
        ],
        "conversions": reports_domain.funnel_conversions(entered),
    }


async def churn_report(
    workspace: str, start: datetime, end: datetime, tx: Transaction[ReportsRepository]
) -> dict[str, Any]:
    """Churn rate = customers churned in the period / customers at its start x 100, with reasons."""
    store = tx.store
    at_start = await store.customers_at(workspace, start)
    churned = await store.churned_between(workspace, start, end)
    reasons: dict[str, int] = {}
    for _, reason, _text in churned:
        reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + 1
    return {
        "start": start,
        "end": end,
        "customers_at_start": at_start,
        "churned": len(churned),
        "churn_rate": reports_domain.churn_rate(at_start, len(churned)),
        "reasons": reasons,
        "other_texts": [t for _, r, t in churned if r == "other" and t],
    }


def default_period(now: datetime, days: int = 30) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now
