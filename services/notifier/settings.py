"""Settings of the notifier service (`LEADWIRE_NOTIFIER_*` beside the platform's own)."""

from __future__ import annotations

import base64
import hashlib

from pydantic import Field, SecretStr

from shared.settings import Settings


class NotifierSettings(Settings):
    """Where public links point, how secrets are sealed, how deliveries are paced and retried."""

    # Fernet keys sealing channel secrets at rest, newest first (comma-separated, so a key can
    # be rotated). Unset: one derived from the auth secret; operators should set their own.
    notifier_encryption_keys: SecretStr | None = None
    # Public base URLs: unsubscribe links are served by notifier, tracking links by ingest.
    notifier_public_url: str = "http://127.0.0.1:8004"
    notifier_tracking_url: str = "http://127.0.0.1:8001"
    # A link back to a contact in Slack messages and templates (`{contact_id}` substituted).
    notifier_contact_url: str = "http://127.0.0.1:8002/v1/contacts/{contact_id}"
    # Hosts (names, addresses or CIDR ranges) an operator allows for http:// and for private,
    # loopback or link-local targets; everything else must be public https.
    notifier_allowed_hosts: list[str] = Field(default_factory=list)
    notifier_slack_api_url: str = "https://slack.com/api"
    # Slack's pace per channel (one message a second); the first to a quiet channel goes at once.
    notifier_slack_interval_s: float = 1.0
    notifier_http_timeout_s: float = 10.0
    notifier_smtp_timeout_s: float = 30.0
    notifier_smtp_pool_size: int = 8
    # Retries: exponential backoff with jitter from `base`, at most `max_delay` apart, given up
    # `retry_window` after the first attempt.
    notifier_retry_base_s: float = 5.0
    notifier_retry_max_delay_s: float = 3600.0
    notifier_retry_window_s: float = 24 * 3600.0
    # A delivery claimed this long ago and never recorded crashed mid-send: its outcome is
    # unknown. Never shorter than the longest attempt (timeouts + 6 s): it may still be in flight.
    notifier_sending_lease_s: float = 300.0
    # A paced Slack message waits in a process's memory for its slot (a second at most) under a
    # lease this long, with no attempt recorded: if the process dies, it is sent after that.
    notifier_hold_lease_s: float = 10.0
    notifier_worker_batch: int = 200
    notifier_max_in_flight: int = 2000
    notifier_poll_interval_s: float = 0.5
    # In the embedded mode a request naming `slack`, `email` or `log` without such a configured
    # channel prints to the terminal (None: only in the embedded mode).
    notifier_log_fallback: bool | None = None

    @property
    def log_fallback(self) -> bool:
        return self.embedded if self.notifier_log_fallback is None else self.notifier_log_fallback

    def encryption_keys(self) -> list[bytes]:
        if self.notifier_encryption_keys is not None:
            raw = self.notifier_encryption_keys.get_secret_value()
            return [k.strip().encode() for k in raw.split(",") if k.strip()]
        digest = hashlib.sha256(b"leadwire-notifier-secrets:" + self.signing_secret()).digest()
        return [base64.urlsafe_b64encode(digest)]

    def signing_secret(self) -> bytes:
        """The root of every key notifier derives (link signatures, address hashes)."""
        return self.resolved_auth_secret().encode()


def notifier_settings(settings: Settings) -> NotifierSettings:
    """The notifier view of whatever settings the app was made with (env fills its knobs)."""
    if isinstance(settings, NotifierSettings):
        return settings
    return NotifierSettings(**settings.model_dump())
