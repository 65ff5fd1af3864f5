"""notifier's pure rules: backoff, pacing, policy, target checks, signatures, templates."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import itertools
import random
from datetime import UTC, datetime, time, timedelta

import pytest

from services.notifier.channels.domain import (
    AllowList,
    check_url,
    forbidden_reason,
    refused_addresses,
    webhook_signature,
)
from services.notifier.delivery.domain import (
    CONTACT_RECHECK_MAX,
    Pacer,
    QuietHours,
    RetryPolicy,
    contact_recheck_at,
    http_outcome,
    marketing_decision,
    smtp_outcome,
)
from services.notifier.templates.domain import (
    TemplateSource,
    add_open_pixel,
    render,
    rewrite_links,
    validate,
    variables_for,
)
from shared import signed_links

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class TestRetryPolicy:
    def test_delays_grow_exponentially_with_jitter_and_a_cap(self) -> None:
        policy = RetryPolicy(base_s=5, max_delay_s=60, window_s=3600)
        rng = random.Random(7)
        delays = [policy.delay(n, rng) for n in range(1, 8)]
        for n, delay in enumerate(delays, start=1):
            nominal = min(60, 5 * 2 ** (n - 1))
            assert 0.75 * nominal <= delay <= 1.25 * nominal

    def test_retry_after_wins_when_later(self) -> None:
        assert RetryPolicy(base_s=1).delay(1, random.Random(1), retry_after=30) == 30

    def test_nothing_after_the_window(self) -> None:
        policy = RetryPolicy(base_s=3600, max_delay_s=3600, window_s=24 * 3600)
        first = NOW - timedelta(hours=23, minutes=30)
        assert policy.next_attempt(first, NOW, 5, random.Random(1)) is None
        assert policy.next_attempt(NOW, NOW, 1, random.Random(1)) is not None


class TestContactRecheck:
    def test_a_new_request_looks_again_within_milliseconds(self) -> None:
        # Its contact is most likely being committed beside it.
        assert contact_recheck_at(NOW, NOW) - NOW <= timedelta(milliseconds=50)

    def test_the_looks_thin_out_as_the_wait_grows_up_to_a_second(self) -> None:
        looks, at = [], NOW
        while at - NOW < timedelta(seconds=10):
            following = contact_recheck_at(NOW, at)
            looks.append(following - at)
            at = following
        assert all(b >= a for a, b in itertools.pairwise(looks))
        assert looks[-1] == CONTACT_RECHECK_MAX
        # About ten looks over the first second rather than a hundred.
        assert sum(1 for g in looks if g < CONTACT_RECHECK_MAX) <= 10


class TestOutcomes:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (200, "sent"),
            (204, "sent"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (301, "failed"),
            (400, "failed"),
            (404, "failed"),
            (410, "failed"),
        ],
    )
    def test_http_answers(self, status: int, kind: str) -> None:
        assert http_outcome(status, "", None).kind == kind

    def test_retry_after_seconds_are_kept(self) -> None:
        assert http_outcome(429, "", "12").retry_after == 12.0

    def test_smtp_5xx_bounces_4xx_retries(self) -> None:
        assert smtp_outcome(550, "no such user").kind == "bounced"
        assert smtp_outcome(451, "later").kind == "retry"


class TestPacer:
    def test_first_message_to_a_quiet_channel_goes_at_once_then_spaced(self) -> None:
        pacer = Pacer(1.0)
        assert pacer.reserve("a", 100.0) == 0
        assert pacer.reserve("a", 100.0) == 1.0
        assert pacer.reserve("a", 100.5) == 1.5
        assert pacer.reserve("b", 100.5) == 0  # another channel is not held up

    def test_a_pause_holds_the_channel(self) -> None:
        pacer = Pacer(1.0)
        pacer.pause("a", 130.0)
        assert pacer.reserve("a", 100.0) == 30.0
        assert pacer.sending("a", 100.0, longest=1.0) == 30.0  # put off, not counted
        assert pacer.sending("a", 130.0) == 0

    def test_sends_start_an_interval_apart_whatever_held_them_up(self) -> None:
        pacer = Pacer(1.0)
        # Two messages booked a second apart, both let out late at once (a wait for a
        # connection): the second still starts a second after the first.
        assert pacer.reserve("a", 100.0) == 0
        assert pacer.reserve("a", 100.0) == 1.0
        assert pacer.sending("a", 101.2) == 0
        assert pacer.sending("a", 101.2) == 1.0
        assert pacer.sending("b", 101.2) == 0


class TestMarketingDecision:
    def decide(self, **overrides: object) -> tuple[str | None, datetime | None]:
        values: dict[str, object] = {
            "suppression": None,
            "subscription_status": "subscribed",
            "sent_last_24h": 0,
            "daily_cap": 3,
            "quiet_hours": None,
            "now": NOW,
        }
        decision = marketing_decision(**(values | overrides))  # type: ignore[arg-type]
        return decision.suppress, decision.hold_until

    def test_suppressed_addresses_and_statuses(self) -> None:
        assert self.decide(suppression="bounced") == ("bounced", None)
        assert self.decide(subscription_status="unsubscribed") == ("unsubscribed", None)
        assert self.decide(sent_last_24h=3) == ("daily_cap", None)
        assert self.decide(sent_last_24h=3, daily_cap=0) == (None, None)

    def test_quiet_hours_overnight_hold_until_morning(self) -> None:
        quiet = QuietHours(time(21), time(8), "Europe/Paris")
        late = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # 23:30 in Paris
        _, until = self.decide(quiet_hours=quiet, now=late)
        assert until == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 08:00 in Paris
        assert self.decide(quiet_hours=quiet, now=NOW) == (None, None)


class TestTargets:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "fe80::1",
        ],
    )
    def test_inner_addresses_are_refused(self, address: str) -> None:
        assert forbidden_reason(ipaddress.ip_address(address)) is not None

    def test_public_addresses_pass(self) -> None:
        assert refused_addresses([ipaddress.ip_address("93.184.216.34")]) is None
        mixed = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
        assert refused_addresses(mixed) is not None

    def test_urls(self) -> None:
        allow = AllowList.parse(["127.0.0.1", "hooks.internal"])
        assert check_url("https://example.com/x", "u", allow) == []
        assert check_url("http://hooks.internal/x", "u", allow) == []
        assert check_url("http://127.0.0.1:9/x", "u", allow) == []
        assert check_url("http://example.com/x", "u", allow)[0].code == "https_required"
        assert check_url("https://192.168.0.1/x", "u", allow)[0].code == "forbidden_target"
        assert check_url("https://user:pw@example.com/", "u", allow)[0].code == "invalid_url"
        assert check_url("ftp://example.com/", "u", allow)[0].code == "invalid_url"


class TestSignatures:
    def test_standard_webhooks_signature(self) -> None:
        key = b"0123456789abcdef0123456789abcdef"
        secret = "whsec_" + base64.b64encode(key).decode()
        body = b'{"a":1}'
        mac = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
        assert webhook_signature(secret, "msg_1", 1700000000, body) == (
            "v1," + base64.b64encode(mac).decode()
        )

    def test_signed_links_cannot_be_altered_or_reused_for_another_purpose(self) -> None:
        token = signed_links.sign(b"s", "click", {"c": "a", "u": "https://x"})
        assert signed_links.verify(b"s", "click", token) == {"c": "a", "u": "https://x"}
        assert signed_links.verify(b"s", "open", token) is None
        assert signed_links.verify(b"other", "click", token) is None
        other = signed_links.sign(b"s", "click", {"c": "b", "u": "https://x"})
        spliced = other.split(".")[0] + "." + token.split(".")[1]
        assert signed_links.verify(b"s", "click", spliced) is None
        assert signed_links.verify(b"s", "click", "garbage") is None


class TestTemplates:
    def test_renders_contact_fields_and_escapes_html(self) -> None:
        source = TemplateSource(subject="Hi {{ contact.first_name }}", html="<b>{{ vars.x }}</b>")
        values = variables_for({"first_name": "Ada"}, None, {"x": "<script>"}, workspace="w")
        rendered = render(source, values)
        assert rendered.subject == "Hi Ada"
        assert rendered.html == "<b>&lt;script&gt;</b>"

    def test_sandbox_escapes_are_problems(self) -> None:
        problems = validate(TemplateSource(text="{{ contact.__class__ }}"))
        assert [p.code for p in problems] == ["sandbox_violation"]
        problems = validate(TemplateSource(text="{{ cycler.__init__.__globals__ }}"))
        assert {p.code for p in problems} == {"sandbox_violation"}

    def test_links_are_rewritten_and_a_pixel_added(self) -> None:
        html = '<p><a href="https://a.example/x?y=1&amp;z=2">A</a> <a href="mailto:m@x">M</a></p>'
        out = rewrite_links(html, lambda url: f"https://t/{len(url)}")
        assert 'href="https://t/27"' in out
        assert 'href="mailto:m@x"' in out
        assert add_open_pixel("<body>x</body>", "https://p").endswith(
            'alt="" style="display:none"></body>'
        )


class TestHtmlFromText:
    def test_text_mail_gets_an_escaped_html_part_with_paragraphs_and_live_links(self) -> None:
        from services.notifier.templates.domain import html_from_text

        html = html_from_text("Hi <Ada>,\n\nsee https://x.example/a?b=1&c=2 now\nbye\n")
        assert html == (
            "<p>Hi &lt;Ada&gt;,</p>\n"
            '<p>see <a href="https://x.example/a?b=1&amp;c=2">https://x.example/a?b=1&amp;c=2</a>'
            " now<br>\nbye</p>"
        )
