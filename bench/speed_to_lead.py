"""Speed to lead: from an accepted form POST to the owner's Slack alert, on the distributed stack.

Real Kafka and PostgreSQL (bench/infra.py), the five services as separate processes, recipe 1
(new lead → round-robin owner → Slack alert) installed in a fresh workspace whose Slack channel
points at a local receiver that records when each alert arrives. Form posts are offered open
loop (send times fixed in advance) at each rate of a stepped ramp; for every rate the run
reports speed-to-lead percentiles, per-hop latency from the events' own timestamps, each hop
split at Kafka by its records' timestamps (consumer side, producer side), CPU seconds per lead
and peak RSS per service, PostgreSQL's and Kafka's CPU per lead, how many cores the whole
machine kept busy, and whether the rate was sustained (every lead alerted exactly once and the
backlog drained). Figures go to bench/results/speed-to-lead-<time>.json, with the durability
settings PostgreSQL ran with (a server started for the run keeps them on) and the build
measured (`bench.report`), and a PNG chart beside it.

    .venv/bin/python -m bench.speed_to_lead                      # 5, 100, 250, 500, 750, 1000/s
    .venv/bin/python -m bench.speed_to_lead --rates 5 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.backlog import Backlog, backlog_of
from bench.infra import (
    drop_schemas,
    drop_topics,
    infrastructure,
    postgres_durability,
    postgres_via,
)
from bench.ingest_bench import Connection, cpu_seconds, free_port
from bench.report import ROOT, save_report
from services.demo import prepare_workspace
from services.registry import SERVICES
from shared import db
from shared.auth import issue_token

SECRET = "speed-to-lead-bench-secret-0123456789abcdef"
EMAIL_IN_TEXT = re.compile(rb"stl-[0-9a-f]{12}@bench\.example")


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server standing in for Slack: answers 200 `ok`, notes arrival times."""

    arrivals: dict[bytes, list[float]] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _open: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = field(default_factory=dict)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Close the kept-alive connections so each handler ends at EOF rather than being
            # cancelled when the loop shuts down (Python 3.11 logs a cancelled handler).
            handlers = [task for task in self._open.values() if task is not None]
            for writer in list(self._open):
                writer.close()
            await asyncio.gather(*handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = asyncio.current_task()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                now = time.time()
                for email in set(EMAIL_IN_TEXT.findall(body)):
                    self.arrivals.setdefault(email, []).append(now)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                )
                await writer.drain()
        self._open.pop(writer, None)
        writer.close()


async def install_speed_to_lead(
    urls: dict[str, str], token: str, slack_url: str, assign_at_capture: bool = True
) -> str:
    """The workspace of `services.demo` with its Slack channel pointing at the receiver and
    recipe 1 alone; the path form posts go to."""
    slack = {"slack": {"kind": "slack", "secrets": {"webhook_url": slack_url}}}
    made = await prepare_workspace(
        urls, token, slack, recipes=("new-lead-alert",), assign_at_capture=assign_at_capture
    )
    return made.submissions_path


@dataclass
class Stack:
    """The five services as processes on one Kafka and one PostgreSQL."""

    ports: dict[str, int]
    children: dict[str, subprocess.Popen[bytes]]
    prefix: str

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(child.pid) or 0.0 for name, child in self.children.items()}

    def peak_rss_mb(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for name, child in self.children.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[name] = round(int(line.split()[1]) / 1024, 1)
        return peaks


@contextlib.contextmanager
def running_stack(kafka: str, postgres: str, receiver_port: int) -> Iterator[Stack]:
    prefix = f"stl{uuid.uuid4().hex[:8]}"
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka,
        "LEADWIRE_TOPIC_PREFIX": prefix + ".",
        "DATABASE_URL": postgres,
        "LEADWIRE_DB_SCHEMA": f"{prefix}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_LOG_LEVEL": "WARNING",
        # The local receiver stands in for Slack: the operator allows its loopback address, and
        # Slack's own pace (a message a second per channel) is not what is measured here.
        "LEADWIRE_NOTIFIER_ALLOWED_HOSTS": '["127.0.0.1"]',
        "LEADWIRE_NOTIFIER_SLACK_INTERVAL_S": "0",
        # One load generator posts every lead from one address: lift the per-client limit.
        "LEADWIRE_INGEST_FORM_RATE_PER_S": "100000",
        "LEADWIRE_INGEST_FORM_BURST": "100000",
    }
    subprocess.run([sys.executable, "-m", "services", "migrate"], env=env, cwd=ROOT, check=True)
    ports = {name: free_port() for name in SERVICES}
    logs = ROOT / ".leadwire" / "bench" / prefix
    logs.mkdir(parents=True, exist_ok=True)
    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", "services", "serve", name, "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"{name}.log").open("wb"),
        )
        for name, port in ports.items()
    }
    try:
        yield Stack(ports, children, prefix + ".")
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


async def wait_ready(stack: Stack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        for name in stack.ports:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(stack.url(name) + "/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready")
                await asyncio.sleep(0.5)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "p50_ms": ms(percentile(values, 0.50)),
        "p95_ms": ms(percentile(values, 0.95)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values) if values else None),
    }


def by_second(timed: dict[bytes, tuple[float, float]]) -> list[dict[str, Any]]:
    """Speed to lead of the leads accepted in each second of the offered window (counted from
    the first acceptance; alerted leads only): whether the tail is a transient after the rate
    changed or a queue that grows all along, which the window's percentiles do not tell."""
    if not timed:
        return []
    start = min(accepted for accepted, _ in timed.values())
    seconds: dict[int, list[float]] = {}
    for accepted, arrived in timed.values():
        seconds.setdefault(int(accepted - start), []).append(arrived - accepted)
    series = []
    for second, values in sorted(seconds.items()):
        figures = summary_ms(values)
        series.append(
            {
                "second": second,
                "alerted": len(values),
                "p50_ms": figures["p50_ms"],
                "p99_ms": figures["p99_ms"],
            }
        )
    return series


async def offer(port: int, path: str, rate: float, seconds: float) -> dict[bytes, float]:
    """Post one new lead per scheduled instant (open loop); the acceptance time of each 2xx."""
    accepted: dict[bytes, float] = {}
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()
    failures = Counter[int]()

    async def send() -> None:
        email = f"stl-{uuid.uuid4().hex[:12]}@bench.example".encode()
        body = b'{"email":"' + email + b'","first_name":"Bench","company":"Speed Ltd"}'
        raw = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\nx-correlation-id: " + email[:16] + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        connection = await idle.get() if not idle.empty() else await Connection.open(port)
        try:
            status, _ = await connection.request(raw)
        except (OSError, asyncio.IncompleteReadError):
            failures[0] += 1
            connection.close()
            return
        if 200 <= status < 300:
            accepted[email] = time.time()
        else:
            failures[status] += 1
        idle.put_nowait(connection)

    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    if failures:
        print(f"  refused or failed posts: {dict(failures)}")
    return accepted


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def infrastructure_cpu() -> dict[str, float]:
    """CPU seconds so far of the PostgreSQL processes (server and backends) and of the Kafka
    broker on this machine, found by name: the share of each lead's cost the services' own
    figures leave out. On shared servers this counts their other users too. Children's time
    counts: PostgreSQL's ended backends are in the server process's."""
    found = {"postgres": 0.0, "kafka": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes() if comm == "java" else b""
        except OSError:
            continue
        name = "postgres" if comm == "postgres" else "kafka" if b"kafka.Kafka" in cmdline else None
        if name is not None:
            found[name] += cpu_seconds(int(entry.name), children=True) or 0.0
    return found


async def measure_rate(
    stack: Stack,
    receiver: Receiver,
    backlog: Backlog,
    form_path: str,
    rate: float,
    seconds: float,
    drain: float,
) -> dict[str, Any]:
    """Offer `rate` leads a second for `seconds`, then wait (at most `drain` seconds each) for
    every alert and for every consumer group to catch up: the CPU figures include the work
    beside the alert path that finished after the last alert."""
    cpu_before, infra_before, machine_before = stack.cpu(), infrastructure_cpu(), machine_jiffies()
    own_before = time.process_time()
    accepted = await offer(stack.ports["ingest"], form_path, rate, seconds)
    offered = time.monotonic()
    deadline = offered + drain
    while time.monotonic() < deadline and not all(e in receiver.arrivals for e in accepted):
        await asyncio.sleep(0.1)
    behind = await backlog.wait_drained(time.monotonic() + drain)
    caught_up = time.monotonic() - offered
    cpu_after, infra_after, machine_after = stack.cpu(), infrastructure_cpu(), machine_jiffies()
    own = time.process_time() - own_before
    busy, total = (machine_after[0] - machine_before[0], machine_after[1] - machine_before[1])
    latencies = [receiver.arrivals[e][0] - t for e, t in accepted.items() if e in receiver.arrivals]
    timed = {e: (t, receiver.arrivals[e][0]) for e, t in accepted.items() if e in receiver.arrivals}
    missing = sum(1 for e in accepted if e not in receiver.arrivals)
    doubled = sum(1 for e in accepted if len(receiver.arrivals.get(e, [])) > 1)
    leads = max(len(accepted), 1)
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "accepted": len(accepted),
        "alerted": len(latencies),
        "missing": missing,
        "alerted_twice": doubled,
        "sustained": missing == 0
        and doubled == 0
        and not behind
        and len(accepted) == int(rate * seconds),
        # Seconds from the last post until every consumer group had caught up, and the records
        # of those still behind when the drain ran out (none when sustained).
        "backlog_drained_after_s": None if behind else round(caught_up, 1),
        "backlog_left": behind,
        "speed_to_lead": summary_ms(latencies),
        "speed_to_lead_by_second": by_second(timed),
        "cpu_ms_per_lead": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / leads, 2)
            for name in cpu_after
        },
        "infrastructure_cpu_ms_per_lead": {
            name: round((infra_after[name] - infra_before[name]) * 1000 / leads, 2)
            for name in infra_after
        },
        # This benchmark's own share of the machine: the load generator and the Slack receiver.
        "load_generator_cpu_ms_per_lead": round(own * 1000 / leads, 2),
        # How busy the whole machine was while the rate was offered and drained (cores).
        "machine_busy_cores": round(busy / max(total, 1) * (os.cpu_count() or 1), 2),
        "peak_rss_mb": stack.peak_rss_mb(),
        "_leads": timed,
    }


# The chain of recipe 1, each event as it appears on its topic: (label, event type). With the
# workspace's assignment at capture, contacts emits `contact.owner_assigned` with
# `contact.created` and no `contact.assign_owner` is sent: that hop is absent from the chain.
HOPS = (
    ("ingest: lead.captured", "lead.captured"),
    ("contacts: contact.created", "contact.created"),
    ("workflows: contact.assign_owner", "contact.assign_owner"),
    ("contacts: contact.owner_assigned", "contact.owner_assigned"),
    ("workflows: notification.requested", "notification.requested"),
    ("notifier: notification.sent", "notification.sent"),
)


# When an event of a lead's chain was made (its envelope's `time`: on most hops when its
# batch's handling began) and when it reached Kafka (its record's timestamp, set as the relay
# published it), both epoch seconds.
Times = dict[str, dict[str, tuple[float, float]]]


async def event_times(kafka: str, prefix: str) -> Times:
    """correlation id → event type → (made, on Kafka) of the first event of that type, read
    from every topic of the run."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shared.events.envelope import Envelope
    from shared.events.topics import ALL_TOPICS
    from shared.settings import Settings

    found: Times = {}
    reader = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await reader.start()
    try:
        # The stack runs on default settings: every topic has the default partition count.
        partitions = [
            TopicPartition(prefix + topic, p)
            for topic in ALL_TOPICS
            for p in range(Settings().topic_partitions)
        ]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)

        async def behind() -> bool:
            for tp, end in ends.items():
                if await reader.position(tp) < end:
                    return True
            return False

        while await behind():
            for messages in (await reader.getmany(timeout_ms=500)).values():
                for message in messages:
                    if message.value is None:
                        continue
                    event = Envelope.from_bytes(message.value)
                    seen = found.setdefault(event.correlationid, {})
                    at = (event.time.timestamp(), message.timestamp / 1000)
                    seen[event.type] = min(at, seen.get(event.type, at))
    finally:
        await reader.stop()
    return found


def hop_latencies(
    times: Times, leads: dict[bytes, tuple[float, float]]
) -> dict[str, dict[str, float | None]]:
    """Per hop, how long after the previous event each event of the chain was made, from the
    events' own timestamps; the last hop ends at the receiver."""
    hops: dict[str, list[float]] = {label: [] for label, _ in HOPS}
    hops["slack receiver: message arrived"] = []
    for email, (accepted, arrived) in leads.items():
        chain = times.get(email[:16].decode(), {})
        previous = accepted
        for label, event_type in HOPS:
            if event_type not in chain:
                continue  # a hop this chain does not take, or an event missing
            made = chain[event_type][0]
            hops[label].append(made - previous)
            previous = made
        if "notification.requested" in chain:
            hops["slack receiver: message arrived"].append(
                arrived - chain["notification.requested"][0]
            )
    return {label: summary_ms(values) for label, values in hops.items()}


def hop_stages(
    times: Times, leads: dict[bytes, tuple[float, float]]
) -> dict[str, dict[str, float | None]]:
    """Each hop split in two at Kafka: from the event that caused it reaching Kafka to the
    event being made (the consumer's fetch and the batch's wait), and from being made to
    reaching Kafka (the rest of the batch, its commit and the relay's round). The cause of an
    event is the last event of the chain on Kafka before it was made (a `contact.created` and
    its `contact.owner_assigned` are made in one transaction, both caused by the lead)."""
    stages: dict[str, list[float]] = {}
    for email, (accepted, arrived) in leads.items():
        chain = times.get(email[:16].decode(), {})
        on_kafka: list[float] = []
        for label, event_type in HOPS:
            if event_type not in chain:
                continue
            made, published = chain[event_type]
            cause = max((t for t in on_kafka if t <= made), default=None)
            if cause is not None:
                stages.setdefault(f"{label}: cause on Kafka → made", []).append(made - cause)
            stages.setdefault(f"{label}: made → on Kafka", []).append(published - made)
            on_kafka.append(published)
        if "notification.requested" in chain:
            requested = chain["notification.requested"][1]
            stages.setdefault("slack receiver: request on Kafka → arrived", []).append(
                arrived - requested
            )
        if "lead.captured" in chain:
            stages.setdefault("ingest: accepted → lead.captured on Kafka", []).append(
                chain["lead.captured"][1] - accepted
            )
    return {label: summary_ms(values) for label, values in stages.items()}


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r["offered_per_s"] for r in results]
    fig, (ax, over_time) = plt.subplots(1, 2, figsize=(13, 4.5))
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        ax.plot(rates, [r["speed_to_lead"][key] for r in results], marker="o", label=key[:-3])
    ax.set_xlabel("offered form posts per second")
    ax.set_ylabel("accepted POST → Slack alert (ms)")
    ax.set_yscale("log")
    ax.set_title("Leadwire speed to lead (distributed stack, one machine)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    for r in results:
        series = r.get("speed_to_lead_by_second") or []
        over_time.plot(
            [s["second"] for s in series],
            [s["p99_ms"] for s in series],
            label=f"{r['offered_per_s']:g}/s",
        )
    over_time.set_xlabel("second of the offered window")
    over_time.set_ylabel("p99 of the leads accepted that second (ms)")
    over_time.set_yscale("log")
    over_time.set_title("The tail over each rate's window")
    over_time.grid(True, which="both", alpha=0.3)
    over_time.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def bench(args: argparse.Namespace, kafka: str, postgres: str) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    try:
        with running_stack(kafka, postgres, receiver.port) as stack:
            await wait_ready(stack)
            workspace = f"stl{uuid.uuid4().hex[:6]}"
            token = issue_token(SECRET, workspace, ["admin"])
            form_path = await install_speed_to_lead(
                {name: stack.url(name) for name in stack.ports},
                token,
                f"http://127.0.0.1:{receiver.port}/slack",
                assign_at_capture=not args.assign_by_command,
            )
            results = []
            async with backlog_of(kafka, stack.prefix) as backlog:
                # Warm-up (JIT-free Python, but connection pools, caches and partitions
                # assignment).
                await measure_rate(stack, receiver, backlog, form_path, 5, 2, args.drain)
                for rate in args.rates:
                    result = await measure_rate(
                        stack, receiver, backlog, form_path, rate, args.seconds, args.drain
                    )
                    results.append(result)
            times = await event_times(kafka, stack.prefix)
            for result in results:
                leads = result.pop("_leads")
                result["hops"] = hop_latencies(times, leads)
                result["hop_stages"] = hop_stages(times, leads)
                print(json.dumps(result))
            sustained = [r["offered_per_s"] for r in results if r["sustained"]]
        await drop_topics(kafka, stack.prefix)
        schemas = [f"{stack.prefix.rstrip('.')}_{name}" for name in stack.ports]
        engine = db.create_engine(postgres)
        durability = await postgres_durability(engine)
        await drop_schemas(engine, *schemas)  # disposes the engine
        return {
            "benchmark": "speed-to-lead",
            "at": datetime.now(UTC).isoformat(),
            "command": " ".join(["python -m bench.speed_to_lead", *sys.argv[1:]]),
            "cpus": os.cpu_count(),
            # The services' way to PostgreSQL (a Unix socket or TCP), which CPU per lead depends on.
            "postgres_via": postgres_via(postgres),
            # Whether it kept its crash safety: a lead acknowledged is only durable if it did.
            "postgres_durability": durability,
            "rates": results,
            "max_sustained_per_s": max(sustained, default=None),
        }
    finally:
        await receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5, 100, 250, 500, 750, 1000])
    parser.add_argument("--seconds", type=float, default=20, help="per rate")
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for alerts")
    parser.add_argument(
        "--assign-by-command",
        action="store_true",
        help="no assignment at capture: recipe 1 asks contacts for the owner (5 hops, not 3)",
    )
    args = parser.parse_args()
    # A PostgreSQL started for the run keeps its crash safety, as production's must: the figure
    # is the speed of a lead that is not lost.
    with infrastructure(durable_postgres=True) as (kafka, postgres):
        result = asyncio.run(bench(args, kafka, postgres))
    out = save_report("speed-to-lead", result)
    chart(result["rates"], out.with_suffix(".png"))
    print(f"saved {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
