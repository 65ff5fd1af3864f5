"""access's repository: the only module that builds queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.access.models import ApiKey, Workspace


class AccessStore:
    """Workspaces and API keys, inside one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: Workspace | ApiKey) -> None:
        self.session.add(row)
        await self.session.flush()

    async def workspace(self, workspace_id: str) -> Workspace | None:
        return await self.session.get(Workspace, workspace_id)

    async def workspaces(self) -> Sequence[Workspace]:
        return (await self.session.scalars(select(Workspace).order_by(Workspace.id))).all()

    async def key(self, workspace: str, key_id: str) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.workspace == workspace)
        result: ApiKey | None = await self.session.scalar(query.with_for_update())
        return result

    async def keys(self, workspace: str) -> Sequence[ApiKey]:
        query = select(ApiKey).where(ApiKey.workspace == workspace).order_by(ApiKey.created_at)
        return (await self.session.scalars(query)).all()

    async def count_live_keys(self, workspace: str) -> int:
        query = select(func.count()).where(
            ApiKey.workspace == workspace, ApiKey.revoked_at.is_(None)
        )
        return int(await self.session.scalar(query) or 0)

    async def record_use(self, key_id: str, when: datetime) -> None:
        """Move `last_used_at` forward only: reports from several services arrive in any order."""
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < when))
            .values(last_used_at=when)
        )
