"""Ingest benchmark on real PostgreSQL and Kafka: form submissions per second and latency.

One ingest process (`python -m services serve ingest`, LEADWIRE_BUS=kafka) is started. Distinct
urlencoded form submissions (`Accept: application/json`, so each answer carries its submission
id) are posted over keep-alive HTTP/1.1 connections:

1. saturation: `--concurrency` connections posting back to back for `--duration` seconds;
   the sustained rate of accepted (202) submissions is reported. Driven by `wrk` (Debian's
   package; a Lua script builds each post and collects every accepted id) when installed, so
   that on a 2-core machine the CPU goes to the server under test, not to the client;
   `--client python` uses the asyncio client below instead;
2. fixed rate: `--rate` submissions/s offered open-loop for `--duration` seconds by a minimal
   asyncio HTTP/1.1 client (uvloop); latency is measured from each request's scheduled start
   (no coordinated omission): p50, p99, max.

Afterwards the leads topic is read back from Kafka and every accepted submission id (of every
phase, whichever client sent it) must be there.

Usage: `.venv/bin/python -m bench.ingest_bench [--duration 20] [--rate 1000] [--concurrency 64]
[--warmup 15] [--client wrk|python]`.
Uses DATABASE_URL (postgresql+asyncpg) and LEADWIRE_KAFKA_BOOTSTRAP when set, otherwise
starts throwaway servers like the test session does. Writes bench/results/ingest-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import uvloop
from aiokafka import AIOKafkaConsumer

from bench.infra import infrastructure
from bench.report import ROOT, save_report
from shared.auth import issue_token
from shared.events import topics

SECRET = "bench-secret-not-for-production-0123456789"
WORKSPACE = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough client for this benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


@dataclass
class Phase:
    name: str
    offered_per_s: float | None
    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    accepted_ids: list[str] = field(default_factory=list)
    # Set when the load generator (wrk) reports these itself.
    requests: int | None = None
    latency_ms: dict[str, float] | None = None
    server_side: dict[str, Any] = field(default_factory=dict)
    # The server process's CPU seconds over the phase and the outbox drain after it.
    server_cpu_s: float | None = None

    def record(self, status: int, body: bytes, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)
        self.finished_at.append(time.perf_counter())
        if status == 202:
            self.accepted_ids.append(orjson.loads(body)["submission_id"])

    def summary(self) -> dict[str, Any]:
        elapsed = self.finished - self.started
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

        # Where the tail comes from: the seconds of the phase with the slowest answers.
        worst: dict[int, float] = {}
        for at, latency in zip(self.finished_at, self.latencies, strict=True):
            second = int(at - self.started)
            worst[second] = max(worst.get(second, 0.0), latency)
        slowest = sorted(worst.items(), key=lambda kv: -kv[1])[:5]
        return {
            "phase": self.name,
            "offered_per_s": self.offered_per_s,
            "seconds": round(elapsed, 2),
            "requests": self.requests if self.requests is not None else len(self.latencies),
            "accepted": len(self.accepted_ids),
            "accepted_per_s": round(len(self.accepted_ids) / elapsed, 1) if elapsed else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "client_errors": self.errors,
            "latency_ms": self.latency_ms
            or {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
            "server_side_latency": self.server_side,
            "server_cpu_ms_per_accepted": (
                round(self.server_cpu_s * 1000 / len(self.accepted_ids), 3)
                if self.server_cpu_s is not None and self.accepted_ids
                else None
            ),
            "slowest_seconds": [
                {"second": sec, "max_ms": round(worst_s * 1000, 1)} for sec, worst_s in slowest
            ],
        }


class Load:
    """Builds distinct urlencoded form posts for one form."""

    def __init__(self, port: int, form_id: str) -> None:
        self.port = port
        self.path = f"/v1/forms/{form_id}/submissions"
        self.counter = 0
        self.run = uuid.uuid4().hex[:6]

    def body(self, email: str) -> str:
        return urlencode(
            {
                "email": email,
                "first_name": "  Bench  Lead ",
                "company": "Example Ltd",
                "phone": "020 7946 0018",
                "utm_source": "bench",
                "utm_campaign": "load",
                "consent": "on",
            }
        )

    def next_request(self) -> bytes:
        self.counter += 1
        body = self.body(f"lead{self.counter}.{self.run}@Example.com").encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


async def saturate(load: Load, phase: Phase, concurrency: int, seconds: float) -> None:
    """`concurrency` connections posting back to back until the time is up."""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = await Connection.open(load.port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status, body = await connection.request(load.next_request())
                except (OSError, asyncio.IncompleteReadError):
                    phase.errors += 1
                    connection.close()
                    connection = await Connection.open(load.port)
                    continue
                phase.record(status, body, time.perf_counter() - started)
        finally:
            connection.close()

    phase.started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.finished = time.perf_counter()


WRK_SCRIPT = """
local path, prefix, suffix = %(path)s, %(prefix)s, %(suffix)s
local threads = {}
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Accept"] = "application/json",
}
counter, tid, ids, statuses = 0, 0, {}, {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local body = prefix .. "w" .. tid .. "n" .. counter .. suffix
  return wrk.format("POST", path, headers, body)
end

function response(status, _, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    ids[#ids + 1] = body:match('"submission_id":"([^"]+)"')
  end
end

function done(summary, latency, _)
  local out = io.open(os.getenv("WRK_OUT"), "w")
  out:write('{"duration_us":', summary.duration, ',"requests":', summary.requests)
  out:write(',"socket_errors":', summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout)
  out:write(',"latency_us":{"p50":', latency:percentile(50), ',"p90":',
    latency:percentile(90), ',"p99":', latency:percentile(99), ',"max":', latency.max, '}')
  out:write(',"statuses":{')
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local first = true
  for status, n in pairs(totals) do
    out:write(first and "" or ",", '"', status, '":', n)
    first = false
  end
  out:write('},"ids":[')
  first = true
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("ids")) do
      out:write(first and "" or ",", '"', id, '"')
      first = false
    end
  end
  out:write("]}")
  out:close()
end
"""


async def saturate_wrk(load: Load, phase: Phase, concurrency: int, seconds: float) -> None:
    """As `saturate`, driven by wrk (C, one thread): far less client CPU on a small machine.

    wrk reports latency percentiles itself and hands back every accepted submission id."""
    marker = "@@EMAIL@@"
    prefix, suffix = load.body(marker).split(urlencode({"e": marker})[2:], 1)
    run = f"lead.{load.run}."
    script = WRK_SCRIPT % {
        "path": json.dumps(load.path),
        "prefix": json.dumps(prefix + urlencode({"e": run})[2:]),
        "suffix": json.dumps(urlencode({"e": "@Example.com"})[2:] + suffix),
    }
    with tempfile.TemporaryDirectory() as tmp:
        lua, out = Path(tmp) / "post.lua", Path(tmp) / "out.json"
        lua.write_text(script)
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{load.port}",
            env=os.environ | {"WRK_OUT": str(out)},
            stdout=asyncio.subprocess.DEVNULL,
        )
        phase.started = time.perf_counter()
        if await process.wait() != 0:
            raise RuntimeError("wrk failed")
        result = orjson.loads(out.read_bytes())
    phase.finished = phase.started + result["duration_us"] / 1e6
    phase.statuses = {int(k): v for k, v in result["statuses"].items()}
    phase.accepted_ids = result["ids"]
    phase.errors = result["socket_errors"]
    phase.requests = result["requests"]
    phase.latency_ms = {k: round(v / 1000, 2) for k, v in result["latency_us"].items()}


async def fixed_rate(
    load: Load, phase: Phase, rate: float, seconds: float, max_connections: int = 256
) -> None:
    """Offer `rate` requests/s open-loop; latency counts from each request's scheduled time.

    At most `max_connections` are open; a request waiting for a free one is still timed from
    its schedule, so a slow server shows up as latency, not as a lower offered rate.
    """
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    tasks: set[asyncio.Task[None]] = set()

    async def checkout() -> Connection:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            return await Connection.open(load.port)
        return await idle.get()

    async def send(scheduled: float) -> None:
        nonlocal opened
        connection = await checkout()
        try:
            status, body = await connection.request(load.next_request())
        except (OSError, asyncio.IncompleteReadError):
            phase.errors += 1
            connection.close()
            opened -= 1
            return
        phase.record(status, body, time.perf_counter() - scheduled)
        idle.put_nowait(connection)

    total = int(rate * seconds)
    phase.started = start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    phase.finished = time.perf_counter()
    while not idle.empty():
        idle.get_nowait().close()


async def outbox_drained(client: httpx.AsyncClient, timeout: float = 180) -> float:
    """Seconds until the server's outbox backlog is empty (every event handed to Kafka)."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = (await client.get("/metrics")).text
        for line in metrics.splitlines():
            backlog = line.startswith('leadwire_outbox_backlog{service="ingest"}')
            if backlog and float(line.split()[-1]) == 0:
                return time.perf_counter() - started
        await asyncio.sleep(0.25)
    raise RuntimeError("the outbox did not drain")


SUBMIT_ROUTE = 'route="/v1/forms/{form_id}/submissions"'


def cpu_spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """User + system CPU time of a process so far (Linux), with that of its ended (waited for)
    children if asked; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


async def server_buckets(client: httpx.AsyncClient) -> dict[float, float]:
    """The server's own latency histogram of the submission route (cumulative buckets)."""
    buckets: dict[float, float] = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("leadwire_http_request_seconds_bucket{") and SUBMIT_ROUTE in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = buckets.get(float(le), 0.0) + float(line.split()[-1])
    return buckets


def server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Server-side latency over a phase (from request start to response end, in-process):
    the share of answers within 50 ms and the bucket holding the 99th percentile."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return {}
    p99 = next(le for le, n in delta.items() if n >= 0.99 * total)
    within = max((n for le, n in delta.items() if le <= 0.05), default=0.0)
    return {
        "requests": int(total),
        "within_50ms": round(within / total, 4),
        "p99_at_most_ms": None if p99 == float("inf") else round(p99 * 1000, 1),
    }


async def read_back(kafka: str, topic: str, wanted: set[str], timeout: float) -> set[str]:
    """Submission ids of `lead.captured` events on the topic, read until all wanted are seen."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    seen.add(orjson.loads(message.value)["data"]["submission_id"])
    finally:
        await consumer.stop()
    return seen


async def bench(args: argparse.Namespace, kafka: str, postgres: str) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    port = free_port()
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka,
        "LEADWIRE_TOPIC_PREFIX": prefix,
        "DATABASE_URL": postgres,
        "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_LOG_LEVEL": "WARNING",
        # The load comes from one address: lift the per-client limit for the benchmark.
        "LEADWIRE_INGEST_FORM_RATE_PER_S": "1000000",
        "LEADWIRE_INGEST_FORM_BURST": "1000000",
    }
    subprocess.run(  # noqa: ASYNC221  (setup, before any load)
        [sys.executable, "-m", "services", "migrate", "ingest"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "services", "serve", "ingest", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=ROOT)  # noqa: ASYNC220
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the ingest process did not become ready")
                await asyncio.sleep(0.2)
            headers = {"Authorization": f"Bearer {issue_token(SECRET, WORKSPACE, ['admin'])}"}
            form = await client.post(
                "/v1/forms",
                headers=headers,
                json={
                    "name": "Benchmark",
                    "fields": [
                        {"name": "email", "type": "email", "label": "Email", "required": True},
                        {"name": "first_name", "label": "First name", "required": True},
                        {"name": "company", "label": "Company"},
                        {"name": "phone", "type": "phone", "label": "Phone"},
                    ],
                    "consent": {"text": "I agree"},
                    "default_region": "GB",
                },
            )
            form.raise_for_status()
            load = Load(port, form.json()["id"])

            closed_loop = saturate_wrk if args.client == "wrk" else saturate
            warmup = Phase("warm-up", None)
            await closed_loop(load, warmup, args.concurrency, args.warmup)
            await outbox_drained(client)
            saturation = Phase("saturation", None)
            cpu_before = cpu_seconds(server.pid)
            await closed_loop(load, saturation, args.concurrency, args.duration)
            # The relay catches up before the next phase, so phases do not share the CPU.
            drain_after_saturation = await outbox_drained(client)
            saturation.server_cpu_s = cpu_spent(cpu_before, cpu_seconds(server.pid))
            steady: list[Phase] = []
            drains = [round(drain_after_saturation, 2)]
            for rate in args.rate:
                phase = Phase(f"fixed-rate {rate:g}/s", rate)
                before = await server_buckets(client)
                cpu_before = cpu_seconds(server.pid)
                await fixed_rate(load, phase, rate, args.duration)
                phase.server_side = server_side(before, await server_buckets(client))
                drains.append(round(await outbox_drained(client), 2))
                phase.server_cpu_s = cpu_spent(cpu_before, cpu_seconds(server.pid))
                steady.append(phase)

        phases = [warmup, saturation, *steady]
        wanted = {sid for phase in phases for sid in phase.accepted_ids}
        started = time.perf_counter()
        seen = await read_back(kafka, prefix + topics.LEADS, wanted, timeout=180)
        missing = wanted - seen
    finally:
        server.terminate()
        server.wait(timeout=90)

    return {
        "benchmark": "ingest",
        "when": datetime.now(UTC).isoformat(),
        "command": " ".join(["python -m bench.ingest_bench", *sys.argv[1:]]),
        "server_command": "python -m services serve ingest (LEADWIRE_BUS=kafka, PostgreSQL)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "concurrency": args.concurrency,
        "warmup_seconds": args.warmup,
        "saturation_client": args.client,
        "fixed_rate_client": "python (open loop)",
        "phases": [p.summary() for p in phases[1:]],
        "kafka": {
            "accepted_total": len(wanted),
            "found_on_topic": len(wanted & seen),
            "missing": len(missing),
            "read_back_seconds": round(time.perf_counter() - started, 2),
            # After each phase: how long the relay took to hand the backlog to Kafka.
            "outbox_drain_seconds_after_each_phase": drains,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[1000.0], help="fixed-rate phases, per s"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="saturation connections")
    parser.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="seconds of load before measuring: a broker just started spends a third of a "
        "core compiling its hot paths (JIT) during its first minute, on this 2-core machine",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="saturation load generator (default wrk when installed: less client CPU)",
    )
    args = parser.parse_args()
    with infrastructure() as (kafka, postgres):
        # uvloop keeps the load generator's own CPU use down on a 2-core machine.
        result = uvloop.run(bench(args, kafka, postgres))
    path = save_report("ingest", result)
    saturation, *steady = result["phases"]
    print(
        f"saturation: {saturation['accepted_per_s']} accepted submissions/s "
        f"({saturation['accepted']} in {saturation['seconds']} s, "
        f"p99 {saturation['latency_ms']['p99']} ms at {args.concurrency} connections; "
        f"server CPU {saturation['server_cpu_ms_per_accepted']} ms per accepted submission)"
    )
    for phase in steady:
        latency = phase["latency_ms"]
        print(
            f"{phase['phase']}: achieved {phase['accepted_per_s']}/s, latency p50 "
            f"{latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
            f"statuses {phase['statuses']}; server-side {phase['server_side_latency']}"
        )
    kafka = result["kafka"]
    print(
        f"kafka: {kafka['found_on_topic']}/{kafka['accepted_total']} accepted submissions "
        f"on the leads topic, {kafka['missing']} missing"
    )
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
