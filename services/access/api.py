"""access's HTTP API: the workspace registry (operators) and each workspace's API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends

from services.access import domain, handlers
from services.access.models import ApiKey, Workspace
from services.access.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    WorkspaceCreate,
    WorkspaceRead,
)
from shared.app import Context
from shared.auth import Principal, authenticate
from shared.errors import Forbidden, NotFound
from shared.openapi import problems

router = APIRouter(tags=["access"])
# Any valid credential; what it may do is decided per route by the domain's rules.
Caller = Annotated[Principal, Depends(authenticate)]


def _operator(principal: Principal) -> None:
    if domain.OPERATOR_SCOPE not in principal.scopes:
        raise Forbidden("only operators manage workspaces", required_scope=domain.OPERATOR_SCOPE)


def _workspace_read(row: Workspace) -> WorkspaceRead:
    return WorkspaceRead(id=row.id, name=row.name, created_at=domain.as_utc(row.created_at))


def key_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        workspace=key.workspace,
        name=key.name,
        scopes=list(key.scopes),
        created_at=domain.as_utc(key.created_at),
        expires_at=domain.as_utc(key.expires_at) if key.expires_at else None,
        revoked_at=domain.as_utc(key.revoked_at) if key.revoked_at else None,
        last_used_at=domain.as_utc(key.last_used_at) if key.last_used_at else None,
    )


@router.post("/v1/workspaces", status_code=201, responses=problems(409))
async def create_workspace(body: WorkspaceCreate, ctx: Context, caller: Caller) -> WorkspaceRead:
    """Register a workspace (operators only)."""
    _operator(caller)
    async with ctx.uow() as uow:
        row = await handlers.create_workspace(body.id, body.name, uow, datetime.now(UTC))
    return _workspace_read(row)


@router.get("/v1/workspaces")
async def list_workspaces(ctx: Context, caller: Caller) -> list[WorkspaceRead]:
    """Every registered workspace (operators only)."""
    _operator(caller)
    async with ctx.uow() as uow:
        return [_workspace_read(row) for row in await handlers.list_workspaces(uow)]


@router.post("/v1/workspaces/{workspace}/keys", status_code=201, responses=problems(409))
async def create_key(
    workspace: str, body: ApiKeyCreate, ctx: Context, caller: Caller
) -> ApiKeyCreated:
    """Create an API key; the response is the only time the key itself is shown."""
    if not domain.may_manage(caller, workspace):
        raise NotFound(f"workspace {workspace} is not registered")
    async with ctx.uow() as uow:
        key, plaintext = await handlers.create_key(
            workspace,
            body.name,
            body.scopes,
            uow,
            datetime.now(UTC),
            expires_at=body.expires_at,
            ttl_days=body.ttl_days,
            granter=caller,
        )
    return ApiKeyCreated(**key_read(key).model_dump(), key=plaintext)


@router.get("/v1/workspaces/{workspace}/keys")
async def list_keys(workspace: str, ctx: Context, caller: Caller) -> list[ApiKeyRead]:
    """The workspace's keys with their last use (never their secrets)."""
    if not domain.may_read(caller, workspace):
        raise NotFound(f"workspace {workspace} is not registered")
    async with ctx.uow() as uow:
        return [key_read(key) for key in await handlers.list_keys(workspace, uow)]


@router.delete("/v1/workspaces/{workspace}/keys/{key_id}")
async def revoke_key(workspace: str, key_id: str, ctx: Context, caller: Caller) -> ApiKeyRead:
    """Revoke a key: every service answers 401 to it within a second."""
    if not domain.may_manage(caller, workspace):
        raise NotFound(f"workspace {workspace} is not registered")
    async with ctx.uow() as uow:
        key = await handlers.revoke_key(workspace, key_id, uow, datetime.now(UTC))
    return key_read(key)
