"""Queries of the reports: lifecycle counts and entries, churn, data quality samples."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal,
    select,
)

from services.contacts.models import Contact, LifecycleChangeRow
from services.contacts.people.store import LIVE, PeopleStore
from shared.db import UtcDateTime


class ReportsStore(PeopleStore):
    """Counts and samples for the reports."""

    async def stage_counts(self, workspace: str) -> dict[str, int]:
        rows = await self.session.execute(
            select(Contact.lifecycle_stage, func.count())
            .where(Contact.workspace == workspace, LIVE)
            .group_by(Contact.lifecycle_stage)
        )
        return {stage: int(n) for stage, n in rows}

    async def stage_entries(self, workspace: str, start: datetime, end: datetime) -> dict[str, int]:
        rows = await self.session.execute(
            select(
                LifecycleChangeRow.to_stage,
                func.count(func.distinct(LifecycleChangeRow.contact_id)),
            )
            .where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.changed_at >= literal(start, UtcDateTime),
                LifecycleChangeRow.changed_at < literal(end, UtcDateTime),
            )
            .group_by(LifecycleChangeRow.to_stage)
        )
        return {stage: int(n) for stage, n in rows}

    async def customers_at(self, workspace: str, moment: datetime) -> int:
        """Contacts whose latest lifecycle change at or before `moment` made them customers."""
        latest = (
            select(
                LifecycleChangeRow.contact_id,
                func.max(LifecycleChangeRow.changed_at).label("at"),
            )
            .where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.changed_at <= literal(moment, UtcDateTime),
            )
            .group_by(LifecycleChangeRow.contact_id)
            .subquery()
        )
        stmt = (
            select(func.count(func.distinct(LifecycleChangeRow.contact_id)))
            .join(
                latest,
                and_(
                    latest.c.contact_id == LifecycleChangeRow.contact_id,
                    latest.c.at == LifecycleChangeRow.changed_at,
                ),
            )
            .where(LifecycleChangeRow.to_stage == "customer")
        )
        return int(await self.session.scalar(stmt) or 0)

    async def churned_between(
        self, workspace: str, start: datetime, end: datetime
    ) -> list[tuple[str, str | None, str | None]]:
        rows = await self.session.execute(
            select(
                LifecycleChangeRow.contact_id,
                LifecycleChangeRow.churn_reason,
                LifecycleChangeRow.churn_reason_text,
            ).where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.to_stage == "churned",
                LifecycleChangeRow.from_stage == "customer",
                LifecycleChangeRow.changed_at > literal(start, UtcDateTime),
                LifecycleChangeRow.changed_at <= literal(end, UtcDateTime),
            )
        )
        return [(c, r, t) for c, r, t in rows]

    async def sample_ids(
        self, workspace: str, condition: ColumnElement[bool], samples: int
    ) -> tuple[int, list[str]]:
        base = and_(Contact.workspace == workspace, LIVE, condition)
        count = int(
            await self.session.scalar(select(func.count()).select_from(Contact).where(base)) or 0
        )
        ids = (
            await self.session.execute(
                select(Contact.id).where(base).order_by(Contact.id).limit(samples)
            )
        ).scalars()
        return count, list(ids)

    async def missing_identity(self, workspace: str, samples: int) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, and_(Contact.email.is_(None), Contact.phone.is_(None)), samples
        )

    async def missing_custom(
        self, workspace: str, name: str, samples: int
    ) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, Contact.custom_fields[name].as_string().is_(None), samples
        )

    async def stale(
        self, workspace: str, now: datetime, days: int, samples: int
    ) -> tuple[int, list[str]]:
        cutoff = literal(now - timedelta(days=days), UtcDateTime)
        seen = func.coalesce(Contact.last_interaction_at, Contact.created_at)
        return await self.sample_ids(workspace, seen < cutoff, samples)

    async def unsubscribed(self, workspace: str, samples: int) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, Contact.subscription_status.in_(["unsubscribed", "bounced"]), samples
        )

    async def recent_custom_fields(
        self, workspace: str, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.session.execute(
            select(Contact.id, Contact.custom_fields)
            .where(Contact.workspace == workspace, LIVE)
            .order_by(Contact.updated_at.desc())
            .limit(limit)
        )
        return [(i, dict(c or {})) for i, c in rows]
