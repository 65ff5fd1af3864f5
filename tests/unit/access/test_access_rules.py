"""access's rules and the key cache every service authenticates API keys with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.access import domain
from shared.auth import KeyCache, Principal, new_api_key
from shared.errors import Unauthorized
from shared.events.access import ApiKeyCreated, ApiKeyRevoked
from shared.events.envelope import Envelope

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def admin(workspace: str = "acme") -> Principal:
    return Principal(workspace, frozenset({"admin"}), "t")


class TestCheckScopes:
    def test_known_scopes_are_sorted_and_deduplicated(self) -> None:
        granted = domain.check_scopes(["leads:write", "forms:write", "leads:write"], admin())
        assert granted == ["forms:write", "leads:write"]

    @pytest.mark.parametrize(
        "scope", ["", "contacts", "contacts:delete", "Contacts:read", "operator"]
    )
    def test_unknown_shapes_are_refused(self, scope: str) -> None:
        with pytest.raises(domain.AccessRuleError) as refused:
            domain.check_scopes([scope], None)
        assert refused.value.code == "bad_scope"

    def test_a_key_never_gets_more_than_its_creator_holds(self) -> None:
        creator = Principal("acme", frozenset({"keys:write", "contacts:read"}), "t")
        assert domain.check_scopes(["contacts:read"], creator) == ["contacts:read"]
        for wanted in (["contacts:write"], ["admin"]):
            with pytest.raises(domain.AccessRuleError) as refused:
                domain.check_scopes(wanted, creator)
            assert refused.value.code == "scope_not_held"

    def test_no_scope_is_refused(self) -> None:
        with pytest.raises(domain.AccessRuleError):
            domain.check_scopes([], None)


class TestExpiry:
    def test_days_or_an_instant_or_never(self) -> None:
        assert domain.expiry(NOW, None, 30) == NOW + timedelta(days=30)
        later = NOW + timedelta(hours=1)
        assert domain.expiry(NOW, later, None) == later
        assert domain.expiry(NOW, None, None) is None

    def test_past_or_conflicting_expiry_is_refused(self) -> None:
        with pytest.raises(domain.AccessRuleError):
            domain.expiry(NOW, NOW - timedelta(seconds=1), None)
        with pytest.raises(domain.AccessRuleError):
            domain.expiry(NOW, NOW + timedelta(days=1), 1)


class TestWhoManagesKeys:
    def test_workspace_admins_and_operators_only(self) -> None:
        assert domain.may_manage(admin("acme"), "acme")
        assert not domain.may_manage(admin("other"), "acme")
        assert domain.may_manage(Principal("ops", frozenset({"operator"}), "o"), "acme")
        reader = Principal("acme", frozenset({"keys:read"}), "t")
        assert domain.may_read(reader, "acme")
        assert not domain.may_manage(reader, "acme")


def key_event(
    event_type: type[ApiKeyCreated] | type[ApiKeyRevoked], **overrides: object
) -> tuple[Envelope, str]:
    fresh = new_api_key()
    state: dict[str, object] = {
        "key_id": fresh.key_id,
        "workspace": "acme",
        "name": "website",
        "scopes": ["leads:write"],
        "secret_sha256": fresh.secret_sha256,
        "created_at": NOW,
    } | overrides
    payload = event_type.model_validate(state)
    return Envelope.of(payload, source="/leadwire/access", workspace="acme"), fresh.plaintext


class TestKeyCache:
    def test_a_known_key_authenticates_with_its_scopes(self) -> None:
        cache = KeyCache()
        event, plaintext = key_event(ApiKeyCreated)
        cache.apply(event)
        principal = cache.authenticate(plaintext, NOW)
        assert principal.workspace == "acme"
        assert principal.scopes == frozenset({"leads:write"})
        assert principal.subject == f"key:{event.data['key_id']}"

    def test_a_wrong_secret_or_unknown_key_is_refused(self) -> None:
        cache = KeyCache()
        event, plaintext = key_event(ApiKeyCreated)
        cache.apply(event)
        wrong = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
        for presented in (wrong, new_api_key().plaintext, "lw_garbage"):
            with pytest.raises(Unauthorized):
                cache.authenticate(presented, NOW)

    def test_revocation_wins_from_the_moment_it_is_read(self) -> None:
        cache = KeyCache()
        created, plaintext = key_event(ApiKeyCreated)
        cache.apply(created)
        revoked = Envelope.of(
            ApiKeyRevoked.model_validate(created.data | {"revoked_at": NOW}),
            source="/leadwire/access",
            workspace="acme",
        )
        cache.apply(revoked)
        with pytest.raises(Unauthorized, match="revoked"):
            cache.authenticate(plaintext, NOW)

    def test_an_expired_key_is_refused(self) -> None:
        cache = KeyCache()
        event, plaintext = key_event(ApiKeyCreated, expires_at=NOW + timedelta(minutes=1))
        cache.apply(event)
        assert cache.authenticate(plaintext, NOW).workspace == "acme"
        with pytest.raises(Unauthorized, match="expired"):
            cache.authenticate(plaintext, NOW + timedelta(minutes=1))

    def test_uses_are_counted_then_handed_over_once(self) -> None:
        cache = KeyCache()
        event, plaintext = key_event(ApiKeyCreated)
        cache.apply(event)
        cache.authenticate(plaintext, NOW)
        cache.authenticate(plaintext, NOW + timedelta(seconds=3))
        uses = cache.take_uses()
        (workspace, use) = uses[event.data["key_id"]]
        assert (workspace, use.requests, use.last_used_at) == (
            "acme",
            2,
            NOW + timedelta(seconds=3),
        )
        assert cache.take_uses() == {}
