"""The reports routes: data quality, funnel and churn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.contacts.api import Reader
from services.contacts.reports import handlers
from services.contacts.store import transaction
from shared.api_types import RequestDateTime
from shared.app import Context
from shared.clock import Clock
from shared.errors import InvalidInput


def _period(
    start: datetime | None, end: datetime | None, clock: Clock
) -> tuple[datetime, datetime]:
    default_start, default_end = handlers.default_period(clock())
    start, end = start or default_start, end or default_end
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if start >= end:
        raise InvalidInput(
            "start must be before end",
            errors=[{"field": "start", "code": "invalid_period", "message": "start >= end"}],
        )
    return start, end


def router(clock: Clock) -> APIRouter:
    """The reports routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    @api.get("/data-quality")
    async def data_quality(
        ctx: Context, who: Reader, stale_days: Annotated[int, Query(ge=1, le=3650)] = 90
    ) -> dict[str, Any]:
        """Missing required fields, invalid values, duplicates, stale and unsubscribed."""
        async with transaction(ctx.uow()) as tx:
            return await handlers.data_quality(who.workspace, stale_days, tx, clock())

    @api.get("/reports/funnel")
    async def funnel(
        ctx: Context,
        who: Reader,
        start: RequestDateTime | None = None,
        end: RequestDateTime | None = None,
    ) -> dict[str, Any]:
        """Contacts per lifecycle stage and conversion between stages over a period."""
        start, end = _period(start, end, clock)
        async with transaction(ctx.uow()) as tx:
            return await handlers.funnel_report(who.workspace, start, end, tx)

    @api.get("/reports/churn")
    async def churn(
        ctx: Context,
        who: Reader,
        start: RequestDateTime | None = None,
        end: RequestDateTime | None = None,
    ) -> dict[str, Any]:
        """Churn rate for a period (churned customers / customers at its start x 100)."""
        start, end = _period(start, end, clock)
        async with transaction(ctx.uow()) as tx:
            return await handlers.churn_report(who.workspace, start, end, tx)

    return api
