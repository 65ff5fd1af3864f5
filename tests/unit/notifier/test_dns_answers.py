"""Outbound HTTP's kept DNS answers: one lookup for a busy target, judged on every use."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifier.channels import http
from services.notifier.channels.domain import AllowList, IpAddress


class TestResolvedAddresses:
    async def test_kept_for_a_while_and_judged_on_every_use(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lookups: list[str] = []

        async def lookup(host: str, port: int) -> list[IpAddress]:
            lookups.append(host)
            return [ipaddress.ip_address("127.0.0.1")]

        monkeypatch.setattr(http, "_lookup", lookup)
        monkeypatch.setattr(http, "_resolved", {})
        allow = AllowList.parse([])
        for _ in range(3):
            with pytest.raises(http.Refused, match="loopback"):
                await http.pinned("https://rebind.example:8443/hook", allow)
        assert lookups == ["rebind.example"]
        monkeypatch.setattr(http, "DNS_TTL_S", 0.0)
        monkeypatch.setattr(http, "_resolved", {})
        await http.resolve("rebind.example", 8443)
        await http.resolve("rebind.example", 8443)
        assert len(lookups) == 3
