"""`leadwire workspaces …` and `leadwire keys …`: the access service's use cases run against its
database (an operator with the database needs no token); its running relay publishes the
events, so every service learns of a key or a revocation as if it came through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from services.access import handlers
from services.access.api import key_read
from services.access.main import SPEC
from shared import db
from shared.migrations import upgrade
from shared.settings import Settings
from shared.uow import UnitOfWork


@asynccontextmanager
async def access_uow(settings: Settings) -> AsyncIterator[UnitOfWork]:
    engine = db.create_engine(
        settings.database_url_for(SPEC.name), schema=settings.schema_for(SPEC.name)
    )
    try:
        if settings.should_migrate_on_start:  # the embedded mode's file may be new
            await upgrade(engine, SPEC.migrations, settings.schema_for(SPEC.name))
        async with UnitOfWork(db.sessionmaker(engine), SPEC.outbox, SPEC.inbox) as uow:
            yield uow
    finally:
        await engine.dispose()


async def create_workspace(settings: Settings, workspace: str, name: str | None) -> str:
    async with access_uow(settings) as uow:
        row = await handlers.create_workspace(workspace, name or workspace, uow, datetime.now(UTC))
    return f"workspace {row.id} registered"


async def list_workspaces(settings: Settings) -> str:
    async with access_uow(settings) as uow:
        rows = await handlers.list_workspaces(uow)
    lines = [f"{'WORKSPACE':<30} {'CREATED':<26} NAME"]
    lines += [f"{r.id:<30} {r.created_at.isoformat():<26} {r.name}" for r in rows]
    return "\n".join(lines)


async def create_key(
    settings: Settings,
    workspace: str,
    name: str,
    scopes: list[str],
    ttl_days: int | None,
    expires_at: datetime | None,
) -> str:
    async with access_uow(settings) as uow:
        key, plaintext = await handlers.create_key(
            workspace,
            name,
            scopes,
            uow,
            datetime.now(UTC),
            expires_at=expires_at,
            ttl_days=ttl_days,
        )
    expiry = key.expires_at.isoformat() if key.expires_at else "never"
    return "\n".join(
        [
            f"key {key.id} for {workspace} ({', '.join(key.scopes)}; expires {expiry})",
            "Store it now: it is shown this once and kept nowhere.",
            plaintext,
        ]
    )


async def list_keys(settings: Settings, workspace: str) -> str:
    async with access_uow(settings) as uow:
        keys = [key_read(k) for k in await handlers.list_keys(workspace, uow)]

    def when(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"

    lines = [f"{'KEY':<22} {'NAME':<20} {'SCOPES':<30} {'LAST USED':<20} {'EXPIRES':<20} REVOKED"]
    lines += [
        f"{k.id:<22} {k.name[:20]:<20} {','.join(k.scopes)[:30]:<30} {when(k.last_used_at):<20}"
        f" {when(k.expires_at):<20} {when(k.revoked_at)}"
        for k in keys
    ]
    return "\n".join(lines)


async def revoke_key(settings: Settings, workspace: str, key_id: str) -> str:
    async with access_uow(settings) as uow:
        key = await handlers.revoke_key(workspace, key_id, uow, datetime.now(UTC))
    assert key.revoked_at is not None
    return f"key {key.id} revoked at {key.revoked_at.isoformat()}"
