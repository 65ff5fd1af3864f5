"""access's use cases: register workspaces, create, list and revoke API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.access import domain
from services.access.models import ApiKey, Workspace
from services.access.store import AccessStore
from shared.auth import Principal, new_api_key, validate_workspace
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import topics
from shared.events.access import ApiKeyCreated, ApiKeyRevoked, ApiKeyState, WorkspaceCreated
from shared.events.envelope import Envelope, source_of
from shared.uow import UnitOfWork

SOURCE = source_of("access")


def _invalid(error: domain.AccessRuleError) -> InvalidInput:
    return InvalidInput(
        str(error), errors=[{"field": error.field, "code": error.code, "message": str(error)}]
    )


def key_state(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.id,
        "workspace": key.workspace,
        "name": key.name,
        "scopes": list(key.scopes),
        "secret_sha256": key.secret_sha256,
        "created_at": domain.as_utc(key.created_at),
        "expires_at": domain.as_utc(key.expires_at) if key.expires_at else None,
        "revoked_at": domain.as_utc(key.revoked_at) if key.revoked_at else None,
    }


def _emit_key(uow: UnitOfWork, event: ApiKeyState) -> None:
    # Keyed by the key: the compacted topic keeps each key's latest state.
    envelope = Envelope.of(event, source=SOURCE, workspace=event.workspace, subject=event.key_id)
    uow.emit(topics.ACCESS, f"{event.workspace}:{event.key_id}", envelope)


async def create_workspace(
    workspace_id: str, name: str, uow: UnitOfWork, now: datetime
) -> Workspace:
    """A workspace is registered once; its id is permanent."""
    store = AccessStore(uow.session)
    validate_workspace(workspace_id)
    if await store.workspace(workspace_id) is not None:
        raise Conflict(f"workspace {workspace_id} exists", reason="workspace_exists")
    workspace = Workspace(id=workspace_id, name=name, created_at=now)
    await store.add(workspace)
    event = WorkspaceCreated(workspace=workspace_id, name=name, created_at=now)
    uow.emit(
        topics.ACCESS,
        f"{workspace_id}:workspace",
        Envelope.of(event, source=SOURCE, workspace=workspace_id),
    )
    return workspace


async def list_workspaces(uow: UnitOfWork) -> Sequence[Workspace]:
    return await AccessStore(uow.session).workspaces()


async def create_key(
    workspace: str,
    name: str,
    scopes: list[str],
    uow: UnitOfWork,
    now: datetime,
    *,
    expires_at: datetime | None = None,
    ttl_days: int | None = None,
    granter: Principal | None = None,
) -> tuple[ApiKey, str]:
    """A new key for an integration of a registered workspace; returns it and its plaintext,
    which is never stored (only the SHA-256 of its secret is)."""
    store = AccessStore(uow.session)
    if await store.workspace(workspace) is None:
        raise NotFound(f"workspace {workspace} is not registered")
    try:
        granted = domain.check_scopes(scopes, granter)
        expires = domain.expiry(now, expires_at, ttl_days)
    except domain.AccessRuleError as error:
        raise _invalid(error) from error
    if await store.count_live_keys(workspace) >= domain.MAX_KEYS_PER_WORKSPACE:
        raise Conflict("too many live keys; revoke unused ones first", reason="too_many_keys")
    fresh = new_api_key()
    key = ApiKey(
        id=fresh.key_id,
        workspace=workspace,
        name=name,
        scopes=granted,
        secret_sha256=fresh.secret_sha256,
        created_at=now,
        expires_at=expires,
    )
    await store.add(key)
    _emit_key(uow, ApiKeyCreated.model_validate(key_state(key)))
    return key, fresh.plaintext


async def list_keys(workspace: str, uow: UnitOfWork) -> Sequence[ApiKey]:
    return await AccessStore(uow.session).keys(workspace)


async def revoke_key(workspace: str, key_id: str, uow: UnitOfWork, now: datetime) -> ApiKey:
    """Revoked at once and for good; revoking twice keeps the first time."""
    key = await AccessStore(uow.session).key(workspace, key_id)
    if key is None:
        raise NotFound(f"key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = now
        _emit_key(uow, ApiKeyRevoked.model_validate(key_state(key)))
    return key


async def record_key_use(key_id: str, when: datetime, uow: UnitOfWork) -> None:
    await AccessStore(uow.session).record_use(key_id, domain.as_utc(when))
