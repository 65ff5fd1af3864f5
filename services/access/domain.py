"""access's rules: which scopes exist, who may grant which, when a key is valid. No I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from shared.auth import ADMIN_SCOPE, Principal

OPERATOR_SCOPE = "operator"  # the installation's operators: every workspace, workspaces too
SCOPE_RE = re.compile(r"^(admin|[a-z][a-z-]{0,40}:(read|write))$")
MAX_KEYS_PER_WORKSPACE = 200


class AccessRuleError(ValueError):
    """A request the rules refuse; `code` is the machine-readable reason, `field` the
    request's field at fault."""

    def __init__(self, message: str, code: str, field: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def may_manage(principal: Principal, workspace: str) -> bool:
    """Keys of a workspace are managed by its admins (or `keys:write`) and by operators."""
    if OPERATOR_SCOPE in principal.scopes:
        return True
    return principal.workspace == workspace and principal.allows("keys:write")


def may_read(principal: Principal, workspace: str) -> bool:
    if OPERATOR_SCOPE in principal.scopes:
        return True
    return principal.workspace == workspace and (
        principal.allows("keys:read") or principal.allows("keys:write")
    )


def check_scopes(requested: list[str], granter: Principal | None) -> list[str]:
    """The scopes a new key gets: known shapes only, never more than its creator holds
    (`granter` None is the command line, which holds the database and so everything)."""
    scopes = sorted(set(requested))
    if not scopes:
        raise AccessRuleError("a key needs at least one scope", "scopes_required", "scopes")
    for scope in scopes:
        if not SCOPE_RE.fullmatch(scope):
            raise AccessRuleError(
                f"`{scope}` is not a scope (e.g. contacts:read)", "bad_scope", "scopes"
            )
    if granter is not None and OPERATOR_SCOPE not in granter.scopes:
        beyond = [s for s in scopes if not granter.allows(s)]
        if beyond or (ADMIN_SCOPE in scopes and ADMIN_SCOPE not in granter.scopes):
            raise AccessRuleError(
                f"a key cannot have scopes its creator lacks: {', '.join(beyond or [ADMIN_SCOPE])}",
                "scope_not_held",
                "scopes",
            )
    return scopes


def expiry(now: datetime, expires_at: datetime | None, ttl_days: int | None) -> datetime | None:
    """When a new key stops working: an instant in the future, a number of days, or never."""
    if expires_at is not None and ttl_days is not None:
        raise AccessRuleError(
            "give expires_at or ttl_days, not both", "expiry_conflict", "ttl_days"
        )
    if ttl_days is not None:
        if ttl_days < 1:
            raise AccessRuleError("ttl_days must be at least 1", "bad_expiry", "ttl_days")
        return now + timedelta(days=ttl_days)
    if expires_at is not None and as_utc(expires_at) <= now:
        raise AccessRuleError("expires_at is in the past", "bad_expiry", "expires_at")
    return as_utc(expires_at) if expires_at is not None else None
