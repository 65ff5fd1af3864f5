"""Notifier benchmark on real Kafka and PostgreSQL, against local receivers.

One notifier process (`python -m services serve notifier`, its Kafka consumer, delivery worker
and outbox relay) is fed `notification.requested` events published to Kafka at a fixed offered
rate; a second process runs the receivers: an HTTP server standing in for Slack (and webhook
targets) and an SMTP server (aiosmtpd), both recording each arrival's wall-clock time.

0. Idle: `--idle-rate` requests/s (5) for `--seconds` to webhook channels, nothing else queued:
   request published to the post arriving at the receiver, p50, p99, max.
1. Slack: `--slack-rate` requests/s for `--seconds` over `--channels` Slack webhook channels,
   paced at `--pace` messages/s per channel. Measured at the receiver: delivered messages/s
   (first to last arrival), and each channel's pace (the most arrivals in any 1 s window, the
   smallest gap between two arrivals).
2. E-mail: `--email-rate` requests/s for `--seconds` to one SMTP channel (pooled connections).
   Measured: mails/s received by the SMTP server.
3. Latency: `--latency-rate` requests/s for `--seconds` to webhook channels (unpaced). Measured
   from notifier's own delivery log: request reached notifier (`created_at`, when its consumer
   got the polled batch) to first attempt started (`first_attempt_at`: the accepting
   transaction records the attempt of what can go at once, the worker's claim the rest), p50,
   p99, max; and, from the receiver, request published to the post arriving.

Usage: `.venv/bin/python -m bench.notifier_bench [--seconds 20] [--channels 50]
[--slack-rate 1000] [--pace 25] [--email-rate 300] [--latency-rate 500] [--idle-rate 5]
[--phases idle slack email latency]`. Offered rates above the targets show the headroom; the
Slack rate a run can deliver is at most `--channels` x `--pace`.
Uses DATABASE_URL (postgresql+asyncpg) and LEADWIRE_KAFKA_BOOTSTRAP when set, otherwise starts
throwaway servers (removed afterwards). Writes bench/results/notifier-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.infra import drop_schemas, infrastructure
from bench.report import ROOT, save_report
from shared import db
from shared.auth import issue_token
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationRequested

SECRET = "bench-secret-not-for-production-0123456789"
SCOPES = ["notifications:read", "notifications:write"]
PHASES = ("idle", "slack", "email", "latency")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# The receivers' process


def serve_receivers(http_port: int, smtp_port: int) -> None:
    """HTTP (Slack, webhooks) and SMTP receivers recording arrival times; GET /stats."""
    import uvicorn
    from aiosmtpd.smtp import SMTP

    arrivals: dict[str, list[float]] = defaultdict(list)
    sent_at: list[tuple[float, float]] = []  # (published, arrived) from the bench's stamp

    class Mail:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrivals["smtp"].append(time.time())
            return "250 OK"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        now = time.time()
        path = scope["path"]
        if path == "/stats":
            payload = json.dumps({"arrivals": arrivals, "latency": sent_at}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": payload})
            return
        if path == "/reset":
            arrivals.clear()
            sent_at.clear()
        else:
            arrivals[path].append(now)
            if path.startswith("/wh/"):
                stamp = json.loads(body)["data"]["content"]["text"]
                sent_at.append((float(stamp), now))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(
            lambda: SMTP(Mail(), hostname="bench"), "127.0.0.1", smtp_port
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="off"
        )
        await uvicorn.Server(config).serve()
        smtp.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The bench


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


async def wait_up(url: str, timeout: float = 120) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def publish_at(
    bus: KafkaBus, workspace: str, rate: int, seconds: float, make: Any
) -> tuple[int, float]:
    """Publish `rate` requests a second for `seconds` (10 ms ticks); returns (count, duration)."""
    tick = 0.01
    sent = 0
    start = time.monotonic()
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - start + tick) * rate))
        batch = []
        for i in range(sent, due):
            payload = make(i)
            envelope = Envelope.of(payload, source="/bench", workspace=workspace)
            key = topics.contact_key(workspace, payload.idempotency_key)
            batch.append((topics.NOTIFICATION_REQUESTS, key, envelope.to_bytes()))
        if batch:
            await bus.publish_batch(batch)
            sent = due
        await asyncio.sleep(max(0.0, start + (sent / rate) - time.monotonic()))
    return sent, time.monotonic() - start


async def stats(client: httpx.AsyncClient, receiver: str) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get(f"{receiver}/stats")).json()
    return result


async def wait_count(
    client: httpx.AsyncClient, receiver: str, prefix: str, count: int, timeout: float
) -> dict[str, list[float]]:
    deadline = time.monotonic() + timeout
    while True:
        arrivals = (await stats(client, receiver))["arrivals"]
        got = {k: v for k, v in arrivals.items() if k.startswith(prefix)}
        if sum(len(v) for v in got.values()) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.5)


def pace_of(times: list[float]) -> tuple[int, float]:
    """The most arrivals in any 1 s window, and the smallest gap."""
    times = sorted(times)
    most, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= 1.0:
            left += 1
        most = max(most, right - left + 1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return most, min(gaps) if gaps else 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_figures(cpu_s: float, delivered: int) -> dict[str, Any]:
    """The notifier process's CPU over a phase (publishing to the last arrival), per message:
    on a shared machine wall-clock rates are noisy, CPU per message is not."""
    return {
        "notifier_cpu_s": round(cpu_s, 2),
        "cpu_ms_per_message": round(cpu_s * 1000 / delivered, 3) if delivered else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def run(args: argparse.Namespace, kafka: str, pg: str) -> dict[str, Any]:
    prefix = f"nb{uuid.uuid4().hex[:8]}."
    workspace = "bench"
    http_port, smtp_port, notifier_port = free_port(), free_port(), free_port()
    receiver = f"http://127.0.0.1:{http_port}"
    notifier = f"http://127.0.0.1:{notifier_port}"
    logs = ROOT / ".leadwire" / "bench" / "notifier"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka,
        "LEADWIRE_TOPIC_PREFIX": prefix,
        "DATABASE_URL": pg,
        "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_MIGRATE_ON_START": "true",
        "LEADWIRE_LOG_LEVEL": "WARNING",
        "LEADWIRE_NOTIFIER_ALLOWED_HOSTS": '["127.0.0.1"]',
        "LEADWIRE_NOTIFIER_SLACK_INTERVAL_S": str(1 / args.pace),
        "LEADWIRE_NOTIFIER_POLL_INTERVAL_S": "0.2",
    }
    headers = {"Authorization": f"Bearer {issue_token(SECRET, workspace, SCOPES)}"}
    bus = KafkaBus(kafka, prefix=prefix, topics=list(topics.ALL_TOPICS))
    await bus.start()
    await bus.wait_connected(60)
    result: dict[str, Any] = {}
    receivers = [sys.executable, "-m", "bench.notifier_bench", "--serve-receivers"]
    receivers += [str(http_port), str(smtp_port)]
    serve = [sys.executable, "-m", "services", "serve", "notifier", "--port", str(notifier_port)]
    try:
        with (
            process(receivers, env, logs / "receivers.log"),
            process(serve, env, logs / "notifier.log") as served,
        ):
            await wait_up(f"{receiver}/stats")
            await wait_up(f"{notifier}/readyz")
            async with httpx.AsyncClient(base_url=notifier, headers=headers) as client:
                for i in range(args.channels):
                    hook = {"webhook_url": f"{receiver}/slack/{i}"}
                    body = {"name": f"slack-{i}", "kind": "slack", "secrets": hook}
                    (await client.post("/v1/channels", json=body)).raise_for_status()
                    secret = {"signing_secret": "whsec_" + "QmVuY2hTZWNyZXRCZW5jaFNlY3JldDEyMw=="}
                    body = {
                        "name": f"wh-{i}",
                        "kind": "webhook",
                        "config": {"url": f"{receiver}/wh/{i}"},
                        "secrets": secret,
                    }
                    (await client.post("/v1/channels", json=body)).raise_for_status()
                mail = {
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "security": "none",
                    "from_address": "bench@leadwire.test",
                }
                body = {"name": "mail", "kind": "email", "config": mail}
                (await client.post("/v1/channels", json=body)).raise_for_status()
            phases = (
                ("idle", idle_phase),
                ("slack", slack_phase),
                ("email", email_phase),
                ("latency", latency_phase),
            )
            async with httpx.AsyncClient(timeout=30) as client:
                for name, phase in phases:
                    if name not in args.phases:
                        continue
                    before = cpu_seconds(served.pid)
                    figures = await phase(args, bus, workspace, client, receiver)
                    figures |= cpu_figures(cpu_seconds(served.pid) - before, figures["delivered"])
                    result[name] = figures
                    print(json.dumps({name: figures}), flush=True)
            result["first_attempt_latency_ms"] = await attempt_latency(pg, prefix)
    finally:
        await bus.stop()
        await drop_schemas(db.create_engine(pg), f"{prefix.rstrip('.')}_notifier")
    return result


async def slack_phase(
    args: argparse.Namespace, bus: KafkaBus, ws: str, client: httpx.AsyncClient, receiver: str
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]

    def make(i: int) -> NotificationRequested:
        return NotificationRequested(
            idempotency_key=f"slack:{run_id}:{i}",
            channel=f"slack-{i % args.channels}",
            content={"text": f"lead {i}"},
        )

    count, took = await publish_at(bus, ws, args.slack_rate, args.seconds, make)
    got = await wait_count(client, receiver, "/slack/", count, timeout=args.seconds * 4 + 60)
    times = [t for v in got.values() for t in v]
    paces = [pace_of(v) for v in got.values()]
    span = max(times) - min(times) if times else 0.0
    return {
        "offered_per_s": args.slack_rate,
        "published": count,
        "publish_s": round(took, 2),
        "delivered": len(times),
        "delivered_per_s": round(len(times) / span, 1) if span else None,
        "channels": len(got),
        "pace_limit_per_channel_per_s": args.pace,
        "most_in_any_1s_window_per_channel": max(p[0] for p in paces) if paces else None,
        "smallest_gap_ms": round(min(p[1] for p in paces) * 1000, 2) if paces else None,
    }


async def email_phase(
    args: argparse.Namespace, bus: KafkaBus, ws: str, client: httpx.AsyncClient, receiver: str
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]

    def make(i: int) -> NotificationRequested:
        return NotificationRequested(
            idempotency_key=f"mail:{run_id}:{i}",
            channel="mail",
            recipient=f"lead{i}@example.com",
            content={"subject": f"Welcome {i}", "text": "Hello", "html": "<p>Hello</p>"},
        )

    count, took = await publish_at(bus, ws, args.email_rate, args.seconds, make)
    got = await wait_count(client, receiver, "smtp", count, timeout=args.seconds * 4 + 60)
    times = got.get("smtp", [])
    span = max(times) - min(times) if times else 0.0
    return {
        "offered_per_s": args.email_rate,
        "published": count,
        "publish_s": round(took, 2),
        "delivered": len(times),
        "delivered_per_s": round(len(times) / span, 1) if span else None,
    }


async def idle_phase(
    args: argparse.Namespace, bus: KafkaBus, ws: str, client: httpx.AsyncClient, receiver: str
) -> dict[str, Any]:
    """A quiet notifier (`--idle-rate`, 5/s): how long one request takes, with nothing queued."""
    return await timed_phase(args, bus, ws, client, receiver, "idle", args.idle_rate)


async def latency_phase(
    args: argparse.Namespace, bus: KafkaBus, ws: str, client: httpx.AsyncClient, receiver: str
) -> dict[str, Any]:
    return await timed_phase(args, bus, ws, client, receiver, "lat", args.latency_rate)


async def timed_phase(
    args: argparse.Namespace,
    bus: KafkaBus,
    ws: str,
    client: httpx.AsyncClient,
    receiver: str,
    phase: str,
    rate: int,
) -> dict[str, Any]:
    """Webhook requests (unpaced) stamped with their publish time, to the receiver's arrival."""
    run_id = uuid.uuid4().hex[:6]
    await client.get(f"{receiver}/reset")

    def make(i: int) -> NotificationRequested:
        return NotificationRequested(
            idempotency_key=f"{phase}:{run_id}:{i}",
            channel=f"wh-{i % args.channels}",
            content={"text": repr(time.time())},
        )

    count, took = await publish_at(bus, ws, rate, args.seconds, make)
    await wait_count(client, receiver, "/wh/", count, timeout=args.seconds * 4 + 60)
    pairs = (await stats(client, receiver))["latency"]
    e2e = [(arrived - sent) * 1000 for sent, arrived in pairs]
    return {
        "offered_per_s": rate,
        "published": count,
        "publish_s": round(took, 2),
        "delivered": len(e2e),
        "published_to_received_ms": {
            "p50": round(percentile(e2e, 50), 1),
            "p99": round(percentile(e2e, 99), 1),
            "max": round(max(e2e), 1) if e2e else None,
        },
    }


async def attempt_latency(pg: str, prefix: str) -> dict[str, Any]:
    """From notifier's delivery log: accepted → first attempt started, per phase."""
    from sqlalchemy import text

    from shared import db

    engine = db.create_engine(pg, schema=f"{prefix.rstrip('.')}_notifier")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT split_part(idempotency_key, ':', 1) AS phase,"
                    " extract(epoch FROM first_attempt_at - created_at) * 1000 AS ms"
                    " FROM deliveries WHERE first_attempt_at IS NOT NULL"
                )
            )
            by_phase: dict[str, list[float]] = defaultdict(list)
            for phase, ms in rows:
                by_phase[phase].append(float(ms))
    finally:
        await engine.dispose()
    return {
        phase: {
            "count": len(values),
            "p50": round(percentile(values, 50), 2),
            "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2),
        }
        for phase, values in by_phase.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--slack-rate", type=int, default=1000)
    parser.add_argument("--pace", type=float, default=25.0)
    parser.add_argument("--email-rate", type=int, default=300)
    parser.add_argument("--latency-rate", type=int, default=500)
    parser.add_argument("--idle-rate", type=int, default=5)
    parser.add_argument(
        "--phases", nargs="+", default=list(PHASES), choices=PHASES, help="which phases to run"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "notifier",
        "at": datetime.now(UTC).isoformat(),
        "command": "python -m bench.notifier_bench "
        f"--seconds {args.seconds:g} --channels {args.channels} --slack-rate {args.slack_rate}"
        f" --pace {args.pace:g} --email-rate {args.email_rate}"
        f" --latency-rate {args.latency_rate} --idle-rate {args.idle_rate}"
        f" --phases {' '.join(args.phases)}",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": {
            "slack_per_s_over_50_channels": 1000,
            "email_per_s": 300,
            "first_attempt_p99_ms_at_500_per_s": 50,
        },
    }
    with infrastructure() as (kafka, pg):
        report |= await run(args, kafka, pg)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = save_report("notifier", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-receivers":
        serve_receivers(int(sys.argv[2]), int(sys.argv[3]))
    else:
        asyncio.run(main())
