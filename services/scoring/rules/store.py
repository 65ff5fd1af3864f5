"""Rule sets and rescores: the saved versions of a workspace's rules and the progress of each
rescore they started."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update

from services.scoring.models import RescoreRow, RuleSetRow
from services.scoring.sql import SqlBase


@dataclass(frozen=True)
class Rescore:
    id: str
    workspace: str
    version: int
    status: str
    total: int
    done: int
    changed: int
    cursor: str
    created_at: datetime
    finished_at: datetime | None


class RuleSetStore(Protocol):
    """Rule-set versions and rescores, as the handlers need them."""

    async def latest_rule_set(self, workspace: str) -> tuple[int, dict[str, Any]] | None: ...
    async def rule_set(self, workspace: str, version: int) -> dict[str, Any] | None: ...
    async def add_rule_set(
        self, workspace: str, version: int, body: dict[str, Any], now: datetime
    ) -> None: ...
    async def add_rescore(self, job: Rescore) -> None: ...
    async def rescore(self, workspace: str, job_id: str) -> Rescore | None: ...
    async def claim_rescore(self) -> Rescore | None: ...
    async def update_rescore(self, job_id: str, **values: Any) -> None: ...


class SqlRuleSets(SqlBase):
    # --- rule sets --------------------------------------------------------------------------

    async def latest_rule_set(self, workspace: str) -> tuple[int, dict[str, Any]] | None:
        row = (
            await self.session.execute(
                select(RuleSetRow.version, RuleSetRow.body)
                .where(RuleSetRow.workspace == workspace)
                .order_by(RuleSetRow.version.desc())
                .limit(1)
            )
        ).first()
        return (row.version, row.body) if row else None

    async def rule_set(self, workspace: str, version: int) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.session.scalar(
            select(RuleSetRow.body).where(
                RuleSetRow.workspace == workspace, RuleSetRow.version == version
            )
        )
        return body

    async def add_rule_set(
        self, workspace: str, version: int, body: dict[str, Any], now: datetime
    ) -> None:
        self.session.add(
            RuleSetRow(workspace=workspace, version=version, body=body, created_at=now)
        )
        await self.session.flush()

    # --- rescores ---------------------------------------------------------------------------

    async def add_rescore(self, job: Rescore) -> None:
        await self.session.execute(
            update(RescoreRow)
            .where(
                RescoreRow.workspace == job.workspace,
                RescoreRow.status.in_(("pending", "running")),
            )
            .values(status="superseded", finished_at=job.created_at)
        )
        self.session.add(
            RescoreRow(
                id=job.id,
                workspace=job.workspace,
                version=job.version,
                status=job.status,
                total=job.total,
                done=job.done,
                changed=job.changed,
                cursor=job.cursor,
                created_at=job.created_at,
            )
        )
        await self.session.flush()

    async def rescore(self, workspace: str, job_id: str) -> Rescore | None:
        row = await self.session.scalar(
            select(RescoreRow).where(RescoreRow.workspace == workspace, RescoreRow.id == job_id)
        )
        return _rescore(row) if row else None

    async def claim_rescore(self) -> Rescore | None:
        """The oldest unfinished rescore, locked (SKIP LOCKED) for one chunk of work."""
        query = (
            select(RescoreRow)
            .where(RescoreRow.status.in_(("pending", "running")))
            .order_by(RescoreRow.created_at)
            .limit(1)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        row = await self.session.scalar(query)
        return _rescore(row) if row else None

    async def update_rescore(self, job_id: str, **values: Any) -> None:
        await self.session.execute(
            update(RescoreRow).where(RescoreRow.id == job_id).values(**values)
        )


def _rescore(row: RescoreRow) -> Rescore:
    return Rescore(
        row.id,
        row.workspace,
        row.version,
        row.status,
        row.total,
        row.done,
        row.changed,
        row.cursor,
        row.created_at,
        row.finished_at,
    )
