"""Workspaces and scoped bearer tokens (HS256 JWTs), and the FastAPI dependency enforcing them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import Forbidden, InvalidInput, Unauthorized
from shared.logs import workspace_var

ADMIN_SCOPE = "admin"  # grants every scope within its workspace
ISSUER = "leadwire"
WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the workspace the token belongs to and what it may do there."""

    workspace: str
    scopes: frozenset[str]
    subject: str

    def allows(self, scope: str) -> bool:
        return ADMIN_SCOPE in self.scopes or scope in self.scopes


def validate_workspace(workspace: str) -> str:
    if not WORKSPACE_RE.match(workspace):
        raise InvalidInput(
            "workspace must be 2-63 lower-case letters, digits or dashes",
            errors=[{"field": "workspace", "code": "pattern", "message": "invalid workspace"}],
        )
    return workspace


def issue_token(
    secret: str,
    workspace: str,
    scopes: list[str],
    subject: str = "cli",
    ttl: timedelta | None = None,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": subject,
        "ws": validate_workspace(workspace),
        "scopes": sorted(set(scopes)),
        "iat": int(now.timestamp()),
        "jti": secrets.token_hex(8),
    }
    if ttl is not None:
        claims["exp"] = int((now + ttl).timestamp())
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["ws", "scopes", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token") from exc
    return Principal(str(claims["ws"]), frozenset(claims["scopes"]), str(claims.get("sub", "")))


_bearer = HTTPBearer(auto_error=False)


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a valid bearer token (401) whose scopes include `scope` (403)."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        principal = verify_token(request.app.state.auth_secret, credentials.credentials)
        if not principal.allows(scope):
            raise Forbidden(f"this token lacks the `{scope}` scope", required_scope=scope)
        workspace_var.set(principal.workspace)
        return principal

    return dependency
