"""Outbound HTTP that cannot be pointed inside: the target's name is resolved here, every
address it resolves to is judged, and the request goes to the judged address (so a DNS answer
that changes between check and connect, DNS rebinding, gains nothing). No redirects."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from services.notifier.channels.domain import AllowList, IpAddress, refused_addresses
from services.notifier.delivery.domain import Outcome, http_outcome

__all__ = [
    "Answer",
    "Client",
    "NotSent",
    "Refused",
    "http_outcome",
    "pinned",
    "post",
    "resolve",
    "timed_out",
]


@dataclass(frozen=True)
class Answer:
    """A target's answer, read whole."""

    status: int
    text: str
    headers: Mapping[str, str]


class Client:
    """Outbound HTTP with keep-alive connections, shared by every send of the process.

    aiohttp rather than httpx here: posting to a local receiver, httpx spent about 1.6 ms of CPU
    per request (its pool looks at every connection, and polls each idle socket, whenever a
    request starts or ends) and aiohttp about 0.2 ms; at a thousand Slack posts a second that is
    the difference between possible and not."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                trust_env=False,  # never through a proxy chosen by the environment
                # No cookies: the session serves every workspace's targets, and a cookie one
                # target set would go with the next request to that host, another's included.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        server_hostname: str | None = None,
    ) -> Answer:
        """POST and read the whole answer; redirects are not followed. Raises `NotSent` when no
        connection could be made (the request surely did not arrive), TimeoutError when the
        answer did not come in time, aiohttp.ClientError for anything else."""
        limits = aiohttp.ClientTimeout(total=timeout, connect=timeout / 2)
        try:
            async with self._open().post(
                url,
                data=body,
                headers=dict(headers),
                timeout=limits,
                allow_redirects=False,
                server_hostname=server_hostname,
            ) as response:
                content = await response.read()
                return Answer(
                    response.status,
                    content.decode(response.charset or "utf-8", "replace"),
                    {k.lower(): v for k, v in response.headers.items()},
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class NotSent(Exception):
    """No connection to the target: the request did not leave."""


class Refused(Exception):
    """The target resolves to an address outbound requests may not reach."""


# A target's addresses are kept this long (as aiohttp's own resolver keeps them), so a busy
# target costs no lookup per send. They are judged on every use and the request goes to the
# judged address, so a kept answer gives DNS rebinding nothing either.
DNS_TTL_S = 10.0
_resolved: dict[tuple[str, int], tuple[float, list[IpAddress]]] = {}


async def resolve(host: str, port: int) -> list[IpAddress]:
    now = time.monotonic()
    found = _resolved.get((host, port))
    if found is not None and found[0] > now:
        return found[1]
    addresses = await _lookup(host, port)
    if addresses:
        if len(_resolved) > 10_000:
            _resolved.clear()
        _resolved[(host, port)] = (now + DNS_TTL_S, addresses)
    return addresses


async def _lookup(host: str, port: int) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


async def pinned(url: str, allow: AllowList) -> tuple[str, dict[str, str], str | None]:
    """The URL rewritten to a checked address, with its Host header and TLS server name; an
    allow-listed host is used as it is."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow.allows_name(host):
        return url, {}, None
    if host.rstrip(".").endswith(".localhost"):
        # RFC 6761: every name under `localhost.` is loopback, whatever a resolver says.
        raise Refused(f"refused target {host}: a .localhost name is loopback")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(host, port)
    if not addresses:
        raise OSError(f"{host} does not resolve")
    if reason := refused_addresses(addresses):
        raise Refused(f"refused target {host}: {reason}")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    headers = {"host": parts.netloc.rpartition("@")[2]}
    server_hostname = host if parts.scheme == "https" else None
    return urlunsplit(parts._replace(netloc=netloc)), headers, server_hostname


async def post(
    client: Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allow: AllowList,
    timeout: float,
    no_answer: Literal["retry", "unknown"] = "retry",
) -> tuple[Outcome, Answer | None]:
    """POST `body` to a user-given URL; the outcome (never raises for the target's answer).
    `no_answer` is what a request sent but not answered in time comes to."""
    try:
        target, host_header, server_hostname = await pinned(url, allow)
    except Refused as exc:
        return Outcome("failed", str(exc)), None
    except OSError as exc:  # DNS failure: maybe temporary
        return Outcome("retry", f"cannot resolve: {exc}"), None
    try:
        answer = await client.post(
            target, body, {**headers, **host_header}, timeout, server_hostname
        )
    except NotSent as exc:
        return Outcome("retry", str(exc)), None
    except TimeoutError:
        return timed_out(timeout, no_answer), None
    except aiohttp.ClientError as exc:
        return Outcome("retry", f"{type(exc).__name__}: {exc}"), None
    return http_outcome(answer.status, answer.text, answer.headers.get("retry-after")), answer


def timed_out(timeout: float, no_answer: Literal["retry", "unknown"]) -> Outcome:
    """Connected, the request sent, and no answer in time: it may have arrived."""
    return Outcome(no_answer, f"timed out after {timeout:g} s without an answer")
