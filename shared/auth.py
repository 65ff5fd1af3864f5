"""Who may call: API keys and internal tokens, and the FastAPI dependency enforcing them.

Two kinds of bearer credential:
- API keys (`lw_<key id>_<secret>`), one per integration: made by the access service, revocable
  at once. Every service holds every key's state (scopes, expiry, revocation, the secret's
  SHA-256) in a `KeyCache` that follows the compacted `leadwire.access.v1` topic, so a request
  is checked locally, with no call to another service, and a revocation reaches every replica
  as fast as an event does.
- Internal tokens: HS256 JWTs signed with `LEADWIRE_AUTH_SECRET` (`leadwire token`), for
  operators, tests and the embedded mode's dev token. They cannot be revoked one by one (only
  by rotating the secret), so integrations get API keys instead.
"""

from __future__ import annotations

import hashlib
import hmac
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
from shared.events.access import KEY_EVENT_TYPES, ApiKeyState
from shared.events.envelope import Envelope
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
    if not WORKSPACE_RE.fullmatch(workspace):  # `$` alone lets a trailing newline through
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


API_KEY_PREFIX = "lw_"
_API_KEY_RE = re.compile(r"^lw_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    secret_sha256: str
    plaintext: str  # shown once to whoever created it, stored nowhere


def new_api_key() -> NewApiKey:
    """A fresh key: an id to find it by and 256 random bits that only its holder keeps."""
    key_id = f"key_{secrets.token_hex(8)}"
    secret = secrets.token_urlsafe(32)
    return NewApiKey(key_id, secret_digest(secret), f"{API_KEY_PREFIX}{key_id}_{secret}")


def secret_digest(secret: str) -> str:
    # A plain SHA-256 is enough for a 256-bit random secret (nothing to brute-force); a slow
    # password hash would only slow every request down.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class KeyUse:
    last_used_at: datetime
    requests: int


class KeyCache:
    """Every API key's current state, built from the access topic; answers who a key is."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKeyState] = {}
        self._uses: dict[str, KeyUse] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def apply(self, event: Envelope) -> None:
        """Take in one event of the access topic (others are ignored)."""
        model = KEY_EVENT_TYPES.get(event.type)
        if model is not None:
            state = model.model_validate(event.data)
            self._keys[state.key_id] = state

    def authenticate(self, presented: str, now: datetime) -> Principal:
        match = _API_KEY_RE.match(presented)
        key = self._keys.get(match.group(1)) if match else None
        if match is None or key is None:
            raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(key.secret_sha256, secret_digest(match.group(2))):
            raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if key.revoked_at is not None:
            raise Unauthorized("this API key was revoked", headers={"WWW-Authenticate": "Bearer"})
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("this API key expired", headers={"WWW-Authenticate": "Bearer"})
        use = self._uses.setdefault(key.key_id, KeyUse(now, 0))
        use.last_used_at, use.requests = now, use.requests + 1
        return Principal(key.workspace, frozenset(key.scopes), f"key:{key.key_id}")

    def take_uses(self) -> dict[str, tuple[str, KeyUse]]:
        """Uses since the last call, by key id with its workspace (then forgotten)."""
        uses, self._uses = self._uses, {}
        return {key_id: (self._keys[key_id].workspace, use) for key_id, use in uses.items()}


_bearer = HTTPBearer(auto_error=False)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Dependency: the caller behind a valid API key or internal token (else 401)."""
    if credentials is None:
        raise Unauthorized("a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    presented = credentials.credentials
    if presented.startswith(API_KEY_PREFIX):
        keys: KeyCache = request.app.state.api_keys
        principal = keys.authenticate(presented, datetime.now(UTC))
    else:
        principal = verify_token(request.app.state.auth_secret, presented)
    workspace_var.set(principal.workspace)
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a valid API key or token (401) whose scopes include `scope` (403)."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        # Takes what `authenticate` takes, so a route may also call it directly.
        principal = await authenticate(request, credentials)
        if not principal.allows(scope):
            raise Forbidden(f"this token lacks the `{scope}` scope", required_scope=scope)
        return principal

    return dependency
