"""Delivery rules: statuses, what a provider's answer means, backoff, Slack pacing, and the
policy for marketing mail (suppression, daily cap, quiet hours). Pure: no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Status = Literal["queued", "sending", "sent", "failed", "suppressed", "retrying", "unknown"]
STATUSES: tuple[str, ...] = (
    "queued",
    "sending",
    "sent",
    "failed",
    "suppressed",
    "retrying",
    "unknown",
)
# Suppression reasons that stop marketing mail; transactional mail still goes.
SUPPRESSING = frozenset({"unsubscribed", "bounced", "complained"})


# ---------------------------------------------------------------------------------------------
# A provider's answer


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to.

    `kind`: `sent`; `retry` (temporary: try again, at `retry_after` seconds at the earliest when
    the provider said so); `failed` (permanent); `bounced` (a permanent refusal of the address,
    which also suppresses it); `unknown` (the request may have reached the provider but no answer
    came, and sending again could double it: not retried, shown and counted as unknown).
    """

    kind: Literal["sent", "retry", "failed", "bounced", "unknown"]
    detail: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    provider_message_id: str | None = None


def http_outcome(status: int, body: str, retry_after: str | None) -> Outcome:
    """An HTTP answer (Slack, webhooks): 2xx sent; 408, 429 and 5xx retried (honouring
    `Retry-After`); 3xx (redirects are not followed) and other 4xx failed."""
    detail = body[:500]
    if 200 <= status < 300:
        return Outcome("sent", detail, status)
    if status in (408, 429) or status >= 500:
        return Outcome("retry", detail, status, parse_retry_after(retry_after))
    return Outcome("failed", f"HTTP {status}: {detail}".strip(), status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (Slack's and most APIs' form)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, min(seconds, 24 * 3600.0))


def smtp_outcome(code: int, message: str) -> Outcome:
    """An SMTP refusal: 5xx is permanent (a hard bounce), 4xx temporary (retried)."""
    detail = f"SMTP {code}: {message}"[:500]
    if 500 <= code < 600:
        return Outcome("bounced", detail, code)
    return Outcome("retry", detail, code)


# ---------------------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits about base·2ⁿ⁻¹ (at most `max_delay`),
    and nothing is tried after `window` since the first attempt."""

    base_s: float = 5.0
    max_delay_s: float = 3600.0
    window_s: float = 24 * 3600.0

    def delay(self, attempts: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds before the next attempt after `attempts` tries: the backoff with ±25 %
        jitter (so a burst of failures does not come back as a burst), or the provider's
        `Retry-After` when that is later."""
        exponential = min(self.max_delay_s, self.base_s * 2 ** max(0, attempts - 1))
        jittered: float = exponential * rng.uniform(0.75, 1.25)
        return max(jittered, retry_after or 0.0)

    def next_attempt(
        self,
        first_attempt_at: datetime,
        now: datetime,
        attempts: int,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> datetime | None:
        """When to try again, or None when that would fall outside the retry window."""
        at = now + timedelta(seconds=self.delay(attempts, rng, retry_after))
        if at > first_attempt_at + timedelta(seconds=self.window_s):
            return None
        return at


# A request whose contact the projection does not know yet is looked at again soon, then less
# and less often. Mostly the contact's own event is being committed at that very moment (its
# transaction and the request's ran side by side, neither saw the other's rows, so the
# contact's arrival could not make the request due): the first look finds it milliseconds
# later instead of a second later.
CONTACT_RECHECK_FIRST = timedelta(milliseconds=20)
CONTACT_RECHECK_MAX = timedelta(seconds=1)


def contact_recheck_at(created_at: datetime, now: datetime) -> datetime:
    """When to look again for the contact of a request made at `created_at`: after as long
    as it has waited so far (doubling), from `CONTACT_RECHECK_FIRST` to `CONTACT_RECHECK_MAX`."""
    waited = now - created_at
    return now + min(CONTACT_RECHECK_MAX, max(CONTACT_RECHECK_FIRST, waited))


# ---------------------------------------------------------------------------------------------
# Slack pacing


class Pacer:
    """About one message per `interval` per key (a Slack channel), each key on its own: the
    first message to a quiet key goes at once, the next ones are spaced out, a 429 pauses the
    key until its `Retry-After`. Other keys are never held up.

    Two clocks per key: the slots booked when messages are claimed (`reserve`, so that no more
    wait in memory than the pace lets out soon), and the start of the last send (`sending`,
    which keeps the spacing where messages actually leave, whatever held them up between)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._paused: dict[str, float] = {}

    def reserve(self, key: str, now: float) -> float:
        """Seconds to wait before sending on `key`; the slot is taken."""
        at = max(now, self._next.get(key, now))
        self._next[key] = at + self.interval_s
        if len(self._next) > 10_000:
            self._forget(now)
        return at - now

    def release(self, key: str, at: float) -> None:
        """Give back the slot taken at `at` (the message was put off instead of sent)."""
        if self._next.get(key) == at + self.interval_s:
            self._next[key] = at

    def sending(self, key: str, now: float, longest: float = float("inf")) -> float:
        """Seconds before a send on `key` may start: an interval after the previous send's
        start, and not before a pause ends. The send is counted as starting then, unless that
        is more than `longest` away (the caller puts the message off instead)."""
        previous = self._started.get(key)
        at = max(now, self._paused.get(key, now))
        if previous is not None:
            at = max(at, previous + self.interval_s)
        if at - now <= longest:
            self._started[key] = at
            if len(self._started) > 10_000:
                self._forget(now)
        return at - now

    def pause(self, key: str, until: float) -> None:
        """The provider asked us to wait (429): nothing goes on `key` before `until`."""
        self._next[key] = max(self._next.get(key, until), until)
        self._paused[key] = max(self._paused.get(key, until), until)

    def _forget(self, now: float) -> None:
        for book in (self._next, self._paused):
            for key in [k for k, at in book.items() if at <= now]:
                del book[key]
        for key in [k for k, at in self._started.items() if at + self.interval_s <= now]:
            del self._started[key]


# ---------------------------------------------------------------------------------------------
# Marketing policy


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which no marketing mail goes out (e.g. 21:00 to 08:00 Europe/Paris)."""

    start: time
    end: time
    timezone: str = "UTC"

    def until(self, now: datetime) -> datetime | None:
        """The end of the quiet period `now` falls in, or None when it is not quiet."""
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        t = local.timetz().replace(tzinfo=None)
        if self.start == self.end:
            return None
        overnight = self.start > self.end
        quiet = (t >= self.start or t < self.end) if overnight else self.start <= t < self.end
        if not quiet:
            return None
        end_day = local.date()
        if overnight and t >= self.start:
            end_day += timedelta(days=1)
        return datetime.combine(end_day, self.end, tzinfo=zone).astimezone(now.tzinfo)


def parse_quiet_hours(value: Any) -> QuietHours | None:
    """`{"start": "21:00", "end": "08:00", "timezone": "Europe/Paris"}`, or ValueError."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise ValueError("quiet_hours must be an object with start, end and timezone")
    try:
        start = time.fromisoformat(str(value["start"]))
        end = time.fromisoformat(str(value["end"]))
    except (KeyError, ValueError) as exc:
        raise ValueError("quiet_hours start and end must be HH:MM") from exc
    zone = str(value.get("timezone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc
    return QuietHours(start, end, zone)


@dataclass(frozen=True)
class Decision:
    """What policy says about a marketing e-mail: send now, hold until `hold_until`, or
    suppress for `reason`."""

    suppress: str | None = None
    hold_until: datetime | None = None


def marketing_decision(
    *,
    suppression: str | None,
    subscription_status: str | None,
    sent_last_24h: int,
    daily_cap: int,
    quiet_hours: QuietHours | None,
    now: datetime,
) -> Decision:
    """Unsubscribed, bounced or complained: suppressed. Over the per-contact cap (a rolling
    24 hours): suppressed. Inside quiet hours: held until they end (not dropped)."""
    if suppression in SUPPRESSING:
        return Decision(suppress=suppression)
    if subscription_status in SUPPRESSING:
        return Decision(suppress=subscription_status)
    if daily_cap > 0 and sent_last_24h >= daily_cap:
        return Decision(suppress="daily_cap")
    if quiet_hours is not None and (until := quiet_hours.until(now)) is not None:
        return Decision(hold_until=until)
    return Decision()
