"""Outbound HTTP keeps no cookies: one client serves every workspace's webhooks and Slack
channels, so a cookie one target set must never ride along on the next request."""

from __future__ import annotations

from services.notifier.channels import http
from tests.receivers import Answer, HttpReceiver


async def test_a_cookie_a_target_sets_is_not_sent_back(slack: HttpReceiver) -> None:
    slack.plan("/first", Answer(headers=(("set-cookie", "session=workspace-a; Path=/"),)))
    client = http.Client(connections=2)
    try:
        # A host name, as an allow-listed target is posted to (others go to a checked address).
        base = f"http://localhost:{slack.port}"
        for path in ("/first", "/second"):
            answer = await client.post(base + path, b"{}", {"content-type": "application/json"}, 5)
            assert answer.status == 200
    finally:
        await client.aclose()
    assert "cookie" not in slack.at("/second")[0].headers
