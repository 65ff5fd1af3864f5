"""RFM: each customer's stats and assessment, and the workspace's quintile breakpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import func, select

from services.scoring.models import BreakpointsRow, RfmRow
from services.scoring.sql import SqlBase, chunks


class CustomerStore(Protocol):
    """Customers' RFM rows and the workspace's breakpoints, as the handlers need them."""

    async def rfm_rows(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    async def save_rfm(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def rfm_stats(self, workspace: str) -> list[tuple[float, int, float]]: ...
    async def breakpoints(self, workspace: str) -> Any: ...
    async def save_breakpoints(self, row: Mapping[str, Any]) -> None: ...
    async def rfm_summary(self, workspace: str) -> tuple[dict[str, int], dict[str, int]]: ...


class SqlCustomers(SqlBase):
    # --- RFM --------------------------------------------------------------------------------

    async def rfm_rows(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        if self.postgres:
            # Every poll with purchases or logins: rows straight from the driver, locked.
            rows = await (await self.driver()).fetch(
                "SELECT * FROM rfm WHERE workspace = $1 AND contact_id = ANY($2::varchar[])"
                " ORDER BY contact_id FOR UPDATE",
                workspace,
                sorted(set(ids)),
            )
            return {row["contact_id"]: dict(row) for row in rows}
        table = RfmRow.__table__
        await self.write_lock()
        for part in chunks(sorted(set(ids))):
            query = select(table).where(
                table.c.workspace == workspace, self._among(table.c.contact_id, part)
            )
            if self.postgres:
                query = query.with_for_update()
            for row in await self.session.execute(query):
                found[row.contact_id] = dict(row._mapping)
        return found

    async def save_rfm(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._upsert(RfmRow.__table__, rows, ["workspace", "contact_id"])  # type: ignore[arg-type]

    async def rfm_stats(self, workspace: str) -> list[tuple[float, int, float]]:
        """(last_at, count, monetary) of every customer of a workspace, for its breakpoints."""
        rows = await self.session.execute(
            select(RfmRow.last_at, RfmRow.count, RfmRow.monetary).where(
                RfmRow.workspace == workspace
            )
        )
        return [(float(r[0]), int(r[1]), float(r[2])) for r in rows]

    async def breakpoints(self, workspace: str) -> BreakpointsRow | None:
        return await self.session.get(BreakpointsRow, workspace)

    async def save_breakpoints(self, row: Mapping[str, Any]) -> None:
        await self._upsert(BreakpointsRow.__table__, [row], ["workspace"])  # type: ignore[arg-type]

    async def rfm_summary(self, workspace: str) -> tuple[dict[str, int], dict[str, int]]:
        segments = await self.session.execute(
            select(RfmRow.segment, func.count())
            .where(RfmRow.workspace == workspace)
            .group_by(RfmRow.segment)
        )
        bands = await self.session.execute(
            select(RfmRow.band, func.count())
            .where(RfmRow.workspace == workspace)
            .group_by(RfmRow.band)
        )
        return (
            {str(s): int(n) for s, n in segments},
            {str(b): int(n) for b, n in bands},
        )
