"""How long a revoked API key keeps working: the access service and two replicas each of
contacts and scoring as separate processes on Kafka and PostgreSQL; a key is made, used on every
replica, revoked through the admin API, and each replica is polled until it answers 401.

    python -m bench.key_revocation_bench [--rounds 10]

Prints each round's slowest replica and the distribution; saves them under bench/results/.
The time includes the outbox relay's publish, Kafka, each replica's follower poll and this
script's polling (every 10 ms)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx

from bench.infra import infrastructure
from bench.report import ROOT, save_report
from shared.auth import issue_token

SECRET = "bench-secret-not-for-production-0123456789"
REPLICAS = {"access": 1, "contacts": 2, "scoring": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise TimeoutError


async def one_round(
    client: httpx.AsyncClient,
    access: str,
    replicas: list[str],
    workspace: str,
    operator: dict[str, str],
) -> dict[str, float]:
    """Seconds from the revoke call's start until each replica answers 401."""
    made = (
        await client.post(
            f"{access}/v1/workspaces/{workspace}/keys",
            json={"name": "bench", "scopes": ["contacts:read"]},
            headers=operator,
        )
    ).json()
    key = {"Authorization": f"Bearer {made['key']}"}

    async def all_accept() -> bool:
        answers = [await client.get(f"{u}/v1/whoami", headers=key) for u in replicas]
        return all(a.status_code == 200 for a in answers)

    await until(all_accept)
    started = time.monotonic()
    await client.delete(f"{access}/v1/workspaces/{workspace}/keys/{made['id']}", headers=operator)
    refused_after: dict[str, float] = {}

    async def refused(url: str) -> None:
        while (await client.get(f"{url}/v1/whoami", headers=key)).status_code != 401:
            await asyncio.sleep(0.01)
        refused_after[url] = time.monotonic() - started

    await asyncio.gather(*(refused(u) for u in replicas))
    return refused_after


async def measure(urls: dict[str, list[str]], rounds: int) -> list[dict[str, float]]:
    operator = {"Authorization": f"Bearer {issue_token(SECRET, 'ops', ['operator'])}"}
    access = urls["access"][0]
    replicas = [u for name, group in urls.items() if name != "access" for u in group]
    results = []
    async with httpx.AsyncClient(timeout=10) as client:

        async def ready() -> bool:
            try:
                answers = [await client.get(f"{u}/readyz") for g in urls.values() for u in g]
            except httpx.TransportError:
                return False
            return all(a.status_code == 200 for a in answers)

        await until(ready)
        workspace = f"bench-{os.getpid()}"
        await client.post(
            f"{access}/v1/workspaces", json={"id": workspace, "name": "b"}, headers=operator
        )
        for _ in range(rounds):
            results.append(await one_round(client, access, replicas, workspace, operator))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with infrastructure() as (kafka, postgres):
        prefix = f"bench{os.getpid()}."
        env = os.environ | {
            "LEADWIRE_BUS": "kafka",
            "LEADWIRE_KAFKA_BOOTSTRAP": kafka,
            "LEADWIRE_TOPIC_PREFIX": prefix,
            "DATABASE_URL": postgres,
            "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
            "LEADWIRE_AUTH_SECRET": SECRET,
            "LEADWIRE_LOG_LEVEL": "WARNING",
        }
        migrate = [sys.executable, "-m", "services", "migrate", *REPLICAS]
        subprocess.run(migrate, env=env, cwd=ROOT, check=True, capture_output=True)
        urls: dict[str, list[str]] = {}
        children = []
        try:
            for name, count in REPLICAS.items():
                for _ in range(count):
                    port = free_port()
                    command = [sys.executable, "-m", "services", "serve", name, "--port", str(port)]
                    children.append(
                        subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
                    )
                    urls.setdefault(name, []).append(f"http://127.0.0.1:{port}")
            rounds = asyncio.run(measure(urls, args.rounds))
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(timeout=30)
    slowest = [max(r.values()) for r in rounds]
    summary = {
        "benchmark": "key_revocation",
        "at": datetime.now(UTC).isoformat(),
        "command": f"python -m bench.key_revocation_bench --rounds {args.rounds}",
        "replicas": REPLICAS,
        "rounds": args.rounds,
        "slowest_replica_s": {
            "median": statistics.median(slowest),
            "max": max(slowest),
            "min": min(slowest),
        },
        "per_round_s": [sorted(r.values()) for r in rounds],
    }
    print(json.dumps(summary["slowest_replica_s"]))
    path = save_report("key-revocation", summary)
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
