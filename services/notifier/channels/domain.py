"""Channel rules: what each kind needs, which targets are allowed, how webhooks are signed.
Pure: no I/O (resolving names is the sender's job; the verdict on an address is made here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

KINDS = ("slack", "email", "webhook", "log")
SMTP_SECURITY = ("starttls", "tls", "none")
# Which secrets each kind takes; they are write-only and sealed at rest.
SECRET_NAMES: dict[str, tuple[str, ...]] = {
    "slack": ("webhook_url", "bot_token"),
    "email": ("password",),
    "webhook": ("signing_secret",),
    "log": (),
}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ConfigProblem:
    field: str
    code: str
    message: str


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class AllowList:
    """The operator's exceptions: host names and address ranges that URLs may name and then be
    plain http and private, loopback or link-local (a test receiver, an internal system)."""

    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names, networks = set(), []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        address = literal_address(host)
        return address is not None and self.allows_address(address)

    def allows_address(self, address: IpAddress) -> bool:
        address = unmapped(address)
        return any(address in network for network in self.networks)


def literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) judged as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_reason(address: IpAddress) -> str | None:
    """Why an address is no place for an outbound request (None when it is public): loopback,
    private, link-local (cloud metadata at 169.254.169.254 included), shared, reserved,
    multicast, unspecified."""
    address = unmapped(address)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_multicast:
        return "multicast"
    if not address.is_global:
        return "not a public address"
    return None


def refused_addresses(addresses: Sequence[IpAddress]) -> str | None:
    """The verdict on every address a name resolved to: refused when any of them is not public
    (a name resolving to both a public and a private address is refused). The allow-list is
    not consulted here: it names the hosts an operator wrote, and a name that merely resolves
    into an allowed range (DNS rebinding, `*.localhost`) is still refused."""
    for address in addresses:
        if (reason := forbidden_reason(address)) is not None:
            return f"{address} is {reason}"
    return None


def check_url(url: str, field: str, allow: AllowList) -> list[ConfigProblem]:
    """A target URL: absolute, https (http only to an allowed host), no credentials, and not a
    literal private address unless allowed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        return [ConfigProblem(field, "invalid_url", "not a valid URL")]
    if parts.scheme not in ("https", "http") or not host:
        return [ConfigProblem(field, "invalid_url", "must be an absolute https URL")]
    if parts.username or parts.password:
        return [ConfigProblem(field, "invalid_url", "must not carry credentials")]
    allowed = allow.allows_name(host)
    if parts.scheme != "https" and not allowed:
        return [ConfigProblem(field, "https_required", "must use https")]
    address = literal_address(host)
    if address is not None and not allowed and (reason := forbidden_reason(address)):
        return [ConfigProblem(field, "forbidden_target", f"{address} is {reason}")]
    return []


# ---------------------------------------------------------------------------------------------
# Channel configuration


def check_channel(
    kind: str, config: Mapping[str, Any], secrets: Mapping[str, str], allow: AllowList
) -> list[ConfigProblem]:
    """Every problem of a channel's configuration and secrets (empty when it is usable)."""
    if kind not in KINDS:
        return [ConfigProblem("kind", "not_an_option", f"kind must be one of {', '.join(KINDS)}")]
    problems = [
        ConfigProblem(f"secrets.{name}", "unknown_secret", f"{kind} channels take no `{name}`")
        for name in secrets
        if name not in SECRET_NAMES[kind]
    ]
    if kind == "slack":
        problems += _check_slack(config, secrets, allow)
    elif kind == "email":
        problems += _check_email(config)
    elif kind == "webhook":
        problems += _check_webhook(config, secrets, allow)
    return problems


def _check_slack(
    config: Mapping[str, Any], secrets: Mapping[str, str], allow: AllowList
) -> list[ConfigProblem]:
    if bool(secrets.get("webhook_url")) == bool(secrets.get("bot_token")):
        return [
            ConfigProblem(
                "secrets", "required", "a Slack channel takes a webhook_url or a bot_token"
            )
        ]
    if url := secrets.get("webhook_url"):
        return check_url(url, "secrets.webhook_url", allow)
    if not config.get("channel"):
        return [ConfigProblem("config.channel", "required", "a bot token needs a default channel")]
    return []


def _check_email(config: Mapping[str, Any]) -> list[ConfigProblem]:
    problems = []
    if not config.get("host"):
        problems.append(ConfigProblem("config.host", "required", "the SMTP server is required"))
    port = config.get("port", 587)
    if not isinstance(port, int) or not 0 < port < 65536:
        problems.append(ConfigProblem("config.port", "invalid", "port must be 1-65535"))
    if config.get("security", "starttls") not in SMTP_SECURITY:
        problems.append(
            ConfigProblem("config.security", "not_an_option", f"one of {', '.join(SMTP_SECURITY)}")
        )
    for name in ("from_address", "reply_to"):
        value = config.get(name)
        if name == "from_address" and not value:
            problems.append(ConfigProblem(f"config.{name}", "required", "a From address"))
        elif value is not None and (not isinstance(value, str) or "@" not in value):
            problems.append(ConfigProblem(f"config.{name}", "invalid", "not an e-mail address"))
    return problems


def _check_webhook(
    config: Mapping[str, Any], secrets: Mapping[str, str], allow: AllowList
) -> list[ConfigProblem]:
    problems = []
    url = config.get("url")
    if not isinstance(url, str) or not url:
        problems.append(ConfigProblem("config.url", "required", "the target URL is required"))
    else:
        problems += check_url(url, "config.url", allow)
    secret = secrets.get("signing_secret")
    if not secret:
        problems.append(
            ConfigProblem("secrets.signing_secret", "required", "a signing secret is required")
        )
    else:
        try:
            if len(webhook_key(secret)) < 24:
                raise ValueError("short")
        except ValueError:
            problems.append(
                ConfigProblem(
                    "secrets.signing_secret",
                    "invalid",
                    "whsec_ followed by base64 of at least 24 bytes",
                )
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Standard Webhooks


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_<base64>`), or of raw text."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the Standard Webhooks signature."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def webhook_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; the id stays the same across retries, so the
    receiver can drop a repeat."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def address_hash(key: bytes, address: str) -> str:
    """The keyed hash a suppression is stored under (lower-cased, trimmed address)."""
    return hmac.new(key, address.strip().lower().encode(), hashlib.sha256).hexdigest()
