"""Workflows benchmark on real PostgreSQL and Kafka, one workflows process (the real app, in
this process: Kafka consumers, the timer loop, the outbox relay).

1. Trigger throughput: 100 enabled workflows in one workspace (contact-created triggers with a
   condition each, one add-tag step then a one-day wait). `--events` contact.created events
   are published to Kafka first, then the app starts; the rate at which its consumer evaluates
   every workflow's trigger and enrolls (one run per event: run, history, timer, command and
   run events written) is measured from just before the first batch committed to the last.
2. A burst: `--burst` runs waiting on timers all due at the same instant; how long after that
   instant the last one fired (committed), and the lateness percentiles.
3. Sustained: `--rate` timers due per second for `--seconds` seconds; lateness percentiles
   (due → fired and committed).

Usage: `.venv/bin/python -m bench.workflows_bench [--events 20000] [--burst 10000]
[--rate 1000 --seconds 30]`. Uses DATABASE_URL (postgresql+asyncpg) and
LEADWIRE_KAFKA_BOOTSTRAP when set, otherwise starts throwaway servers like the test session.
Writes bench/results/workflows-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.infra import drop_schemas, drop_topics, infrastructure
from bench.report import save_report
from services.workflows.engine.timers import RECENT_LATENESS
from services.workflows.main import build_spec
from services.workflows.rows import CONTACTS, ENROLLMENTS, TIMERS
from services.workflows.settings import WorkflowsSettings
from shared import db, metrics
from shared.app import create_app
from shared.auth import issue_token
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot
from shared.events.envelope import Envelope
from shared.migrations import upgrade

SECRET = "bench-secret-not-for-production-0123456789"
WORKSPACE = "bench"
GROUP = "workflows.contacts"
WORKFLOWS = 100
TIMER_STEPS = [
    {"id": "tag", "type": "add_tag", "tag": "t", "next": "wait"},
    {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "after"},
    {"id": "after", "type": "add_tag", "tag": "fired"},
]


def handled() -> int:
    for family in metrics.EVENTS_CONSUMED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("group") == GROUP:
                return int(sample.value)
    return 0


def workflow(i: int) -> dict[str, Any]:
    return {
        "name": f"Welcome {i}",
        "trigger": {
            "type": "contact_created",
            "conditions": {"field": "source", "op": "eq", "value": f"campaign-{i}"},
        },
        "steps": [
            {"id": "tag", "type": "add_tag", "tag": f"welcomed-{i}", "next": "wait"},
            {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "nudge"},
            {"id": "nudge", "type": "add_tag", "tag": "nudged"},
        ],
    }


def contact_events(count: int) -> list[tuple[str, str, bytes]]:
    now = datetime.now(UTC)
    messages = []
    for n in range(count):
        contact_id = f"c{n:08d}-{uuid.uuid4().hex[:6]}"
        snapshot = ContactSnapshot(
            id=contact_id,
            email=f"{contact_id}@bench.io",
            first_name="Ada",
            source=f"campaign-{n % WORKFLOWS}",
            lifecycle_stage="lead",
            subscription_status="subscribed",
            created_at=now,
            updated_at=now,
        )
        envelope = Envelope.of(
            ContactCreated(contact=snapshot, cause="api"), source="/bench", workspace=WORKSPACE
        )
        key = topics.contact_key(WORKSPACE, contact_id)
        messages.append((topics.CONTACTS, key, envelope.to_bytes()))
    return messages


async def wait_for(check: Any, timeout: float, every: float = 0.01) -> float:
    """Poll until `check()` is true; the perf_counter time it became true."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await check():
            return time.perf_counter()
        await asyncio.sleep(every)
    raise TimeoutError("the benchmark did not finish in time")


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def park_runs(engine: AsyncEngine, workflow_id: str, dues: list[datetime]) -> None:
    """Runs waiting on the `wait` step of a workflow, each with its timer due at `dues[i]`
    (written set-wise, as if enrolled earlier)."""
    now = datetime.now(UTC)
    contacts, runs, timers = [], [], []
    for i, due in enumerate(dues):
        contact_id = f"t{uuid.uuid4().hex[:12]}"
        enrollment = f"enr_{uuid.uuid4().hex}"
        data = {"id": contact_id, "first_name": "Ada", "lifecycle_stage": "lead", "n": i}
        contacts.append(
            {"workspace": WORKSPACE, "id": contact_id, "email": None, "data": data}
            | {"merged_into": None, "updated_at": now}
        )
        runs.append(
            {"id": enrollment, "workspace": WORKSPACE, "workflow_id": workflow_id, "version": 1}
            | {"contact_id": contact_id, "status": "waiting", "trigger": "manual", "step": "wait"}
            | {"outcomes": {"tag": "done"}, "seq": 2, "attempt": 0, "wait_event": None}
            | {"wait_until": due, "error": None, "enrolled_at": now, "updated_at": now}
            | {"ended_at": None}
        )
        timers.append(
            {"id": f"run:{enrollment}", "workspace": WORKSPACE, "kind": "run", "due_at": due}
            | {"contact_id": contact_id, "enrollment_id": enrollment, "workflow_id": workflow_id}
            | {"step": "wait", "failures": 0}
        )
    async with engine.begin() as conn:
        for table, rows in ((CONTACTS, contacts), (ENROLLMENTS, runs), (TIMERS, timers)):
            for start in range(0, len(rows), 5000):
                await db.insert_rows(conn, table, rows[start : start + 5000])


async def shift_timers(engine: AsyncEngine, parked_at: datetime, by: timedelta) -> None:
    """Move the parked timers (due from `parked_at` on) by `by`, in one statement."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE timers SET due_at = due_at + :by WHERE due_at >= :parked"),
            {"by": by, "parked": parked_at},
        )


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {
        "p50_s": at(0.5),
        "p90_s": at(0.9),
        "p99_s": at(0.99),
        "max_s": round(ordered[-1], 4),
        "mean_s": round(statistics.fmean(ordered), 4),
    }


async def run(
    pg: str, kafka: str, events: int, burst: int, rate: int, seconds: int
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = prefix.rstrip(".") + "_workflows"
    settings = WorkflowsSettings(
        bus="kafka",
        kafka_bootstrap=kafka,
        topic_prefix=prefix,
        database_url=pg,
        db_schema=schema,
        auth_secret=SECRET,
        migrate_on_start=False,
        outbox_batch=2000,
        log_level="WARNING",
    )
    engine = db.create_engine(pg, schema=schema)
    spec = build_spec()
    await upgrade(engine, spec.migrations, schema)

    result: dict[str, Any] = {"workflows_enabled": WORKFLOWS, "events": events}
    setup = create_app(spec, settings)
    async with setup.router.lifespan_context(setup):
        # 100 enabled workflows, saved through the API.
        headers = {"Authorization": f"Bearer {issue_token(SECRET, WORKSPACE, ['admin'])}"}
        transport = httpx.ASGITransport(app=setup)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            ids = []
            for i in range(WORKFLOWS):
                response = await client.post(
                    "/v1/workflows", json=workflow(i), params={"enabled": True}, headers=headers
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            parked = await client.post(
                "/v1/workflows",
                params={"enabled": True},
                headers=headers,
                json={"name": "Timers", "trigger": {"type": "manual"}, "steps": TIMER_STEPS},
            )
            timer_workflow = parked.json()["id"]

    # The events wait on Kafka before the measured process starts, so its consumer reads a
    # backlog (the group join is left out of the measurement: first batch to last).
    producer = KafkaBus(kafka, prefix=prefix, partitions=settings.topic_partitions)
    await producer.start()
    await producer.wait_connected(60)
    messages = contact_events(events)
    for i in range(0, len(messages), 2000):
        await producer.publish_batch(messages[i : i + 2000])
    await producer.stop()

    app = create_app(spec, settings)
    async with app.router.lifespan_context(app):
        # 1. Triggers: consumption starts once the app joined the group; measured from the
        # first committed batch to the last.
        baseline = handled()
        samples: list[tuple[float, int, float]] = []
        deadline = time.perf_counter() + 900
        done = 0
        while done < events and time.perf_counter() < deadline:
            done = handled() - baseline
            samples.append((time.perf_counter(), done, time.process_time()))
            await asyncio.sleep(0.02)
        # From the last sample before the first commit (the first batch's work included, so
        # a backlog that fits in one batch still has a duration), to the last commit.
        started = next(i for i, s in enumerate(samples) if s[1] > 0)
        first, last = samples[max(0, started - 1)], samples[-1]
        runs = await scalar(
            engine, "SELECT count(*) FROM enrollments WHERE trigger = 'contact_created'"
        )
        elapsed = last[0] - first[0]
        result["trigger_events_per_s"] = (
            round((last[1] - first[1]) / elapsed, 1) if elapsed > 0 else None
        )
        result["runs_enrolled"] = runs
        # This process's CPU (consumer, outbox relay, the benchmark's own polling) per event.
        result["trigger_cpu_ms_per_event"] = round(
            1000 * (last[2] - first[2]) / max(1, last[1] - first[1]), 3
        )

        # 2. A burst of timers due at one instant. Parked a day out, then moved to their due
        # time by one statement: writing them takes longer than any fixed lead on a loaded
        # machine, and time spent writing them is no lateness of the engine's.
        RECENT_LATENESS.clear()
        parked_at = datetime.now(UTC) + timedelta(days=1)
        await park_runs(engine, timer_workflow, [parked_at] * burst)
        due = datetime.now(UTC) + timedelta(seconds=3)
        await shift_timers(engine, parked_at, due - parked_at)
        wall_due = time.perf_counter() + (due - datetime.now(UTC)).total_seconds()
        cpu_before = time.process_time()

        async def burst_fired() -> bool:
            return (
                await scalar(
                    engine, "SELECT count(*) FROM timers WHERE kind = 'run' AND due_at <= :d", d=due
                )
                == 0
            )

        finished = await wait_for(burst_fired, 120, every=0.02)
        burst_cpu = time.process_time() - cpu_before
        lateness = list(RECENT_LATENESS)
        result["burst"] = {
            "timers": burst,
            "fired": len(lateness),
            "all_fired_within_s": round(finished - wall_due, 3),
            "cpu_ms_per_fire": round(1000 * burst_cpu / max(1, len(lateness)), 3),
            "lateness": percentiles(lateness),
        }

        # 3. A sustained rate of timers coming due.
        RECENT_LATENESS.clear()
        parked_at = datetime.now(UTC) + timedelta(days=1)
        dues = [parked_at + timedelta(seconds=i / rate) for i in range(rate * seconds)]
        await park_runs(engine, timer_workflow, dues)
        start = datetime.now(UTC) + timedelta(seconds=3)
        await shift_timers(engine, parked_at, start - parked_at)
        end = dues[-1] + (start - parked_at)
        cpu_before = time.process_time()

        async def sustained_fired() -> bool:
            return (
                await scalar(
                    engine, "SELECT count(*) FROM timers WHERE kind = 'run' AND due_at <= :d", d=end
                )
                == 0
            )

        await wait_for(sustained_fired, seconds + 120, every=0.1)
        sustained_cpu = time.process_time() - cpu_before
        lateness = list(RECENT_LATENESS)
        result["sustained"] = {
            "timers_per_s": rate,
            "seconds": seconds,
            "fired": len(lateness),
            # Includes the idle wait before the first timer is due (the loop's polls).
            "cpu_ms_per_fire": round(1000 * sustained_cpu / max(1, len(lateness)), 3),
            "lateness": percentiles(lateness),
        }
        completed = await scalar(
            engine, "SELECT count(*) FROM enrollments WHERE status = 'completed'"
        )
        result["timer_runs_completed"] = completed
    await drop_schemas(engine, schema)
    await drop_topics(kafka, prefix)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with infrastructure() as (kafka, pg):
        figures = await run(pg, kafka, args.events, args.burst, args.rate, args.seconds)
    report = {
        "benchmark": "workflows",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # The machine is shared: a load far above its CPU count slows every figure here.
            "load_average_1m_before_after": [
                round(load_before[0], 1),
                round(os.getloadavg()[0], 1),
            ],
        },
        "args": vars(args),
        **figures,
    }
    print(json.dumps(report, indent=2))
    save_report("workflows", report)


if __name__ == "__main__":
    asyncio.run(main())
