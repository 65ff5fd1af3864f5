"""Outbound HTTP that cannot be pointed inside: the target's name is resolved here, every
address it resolves to is judged, and the request goes to the judged address (so a DNS answer
that changes between check and connect, DNS rebinding, gains nothing). No redirects."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.notifier.channels.domain import AllowList, IpAddress, refused_addresses
from services.notifier.delivery.domain import Outcome, http_outcome

__all__ = ["Lanes", "Refused", "http_outcome", "pinned", "post", "resolve", "timed_out"]


class Lanes:
    """Outbound HTTP connections spread over several small clients. httpx's pool looks at each
    of its connections (and polls each idle socket) whenever a request starts or ends, so one
    pool of 100 connections costs about ten times what ten pools of ten do."""

    def __init__(self, clients: Sequence[httpx.AsyncClient], per_client: int) -> None:
        self._clients = list(clients)
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for _ in range(per_client):
            for client in self._clients:
                self._free.put_nowait(client)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client with a connection to spare (waits when every connection is taken)."""
        client = await self._free.get()
        try:
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class Refused(Exception):
    """The target resolves to an address outbound requests may not reach."""


async def resolve(host: str, port: int) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


async def pinned(url: str, allow: AllowList) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL rewritten to a checked address, with its Host header and TLS server name; an
    allow-listed host is used as it is."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow.allows_name(host):
        return url, {}, {}
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
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), headers, extensions


async def post(
    lanes: Lanes,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allow: AllowList,
    timeout: float,
    no_answer: Literal["retry", "unknown"] = "retry",
) -> tuple[Outcome, httpx.Response | None]:
    """POST `body` to a user-given URL; the outcome (never raises for the target's answer).
    `no_answer` is what a request sent but not answered in time comes to."""
    try:
        target, host_header, extensions = await pinned(url, allow)
    except Refused as exc:
        return Outcome("failed", str(exc)), None
    except OSError as exc:  # DNS failure: maybe temporary
        return Outcome("retry", f"cannot resolve: {exc}"), None
    try:
        async with lanes.client() as client:
            response = await client.post(
                target,
                content=body,
                headers={**headers, **host_header},
                extensions=extensions,
                timeout=timeout,
                follow_redirects=False,
            )
    except httpx.TimeoutException as exc:
        return timed_out(exc, timeout, no_answer), None
    except httpx.HTTPError as exc:
        return Outcome("retry", f"{type(exc).__name__}: {exc}"), None
    outcome = http_outcome(response.status_code, response.text, response.headers.get("retry-after"))
    return outcome, response


def timed_out(
    exc: httpx.TimeoutException, timeout: float, no_answer: Literal["retry", "unknown"]
) -> Outcome:
    """A timeout before the request left (no connection) is retried; one after it may have
    arrived comes to `no_answer`."""
    detail = f"timed out after {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome("retry", detail)
    return Outcome(no_answer, detail)
