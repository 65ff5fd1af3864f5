"""Scoring benchmark on real PostgreSQL and Kafka.

1. Engagement: `--events` engagement events over `--contacts` known contacts are published to
   Kafka first; then one scoring process (the real app: Kafka consumer, one transaction per
   polled batch, outbox relay publishing score events) is started, and the rate at which its
   consumer commits them is measured from its own events-handled counter, from the first batch
   committed to the last (sustained; the consumer-group join is excluded). Default rule set;
   the mix includes purchases and logins (RFM).
2. Rescore: `--rescore-contacts` contacts with `--ledger` ledger entries written set-wise by
   PostgreSQL, then a new rule-set version is saved and the time until its rescore reports
   `done` is measured (every contact replayed from its ledger, states, timers and score events
   written; the relay publishes meanwhile). Repeated for each size given.
3. Contact snapshots: `--snapshots` events on `leadwire.contacts.v1` as contacts publishes
   them for new leads (each contact's `contact.created`, then a `contact.updated` that changes
   its job title and so its fit score; every 10th contact has engagement set aside waiting for
   it), consumed by one scoring process; measured like the engagement phase, from its
   contacts group's counter.
4. Decay crossings: `--crossings` contacts above MQL whose decay takes them below it at the
   same instant (their timers all due then); measured: from that instant until the last
   `score.threshold_crossed` is read back from Kafka.

Usage: `.venv/bin/python -m bench.scoring_bench [--events 60000] [--contacts 20000]
[--snapshots 20000] [--rescore-contacts 100000] [--ledger-per-contact 20] [--crossings 10000]
[--skip engagement snapshots rescore crossings]`.
Uses DATABASE_URL (postgresql+asyncpg) and LEADWIRE_KAFKA_BOOTSTRAP when set, otherwise
starts throwaway servers (removed afterwards). Writes bench/results/scoring-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.infra import drop_schemas, infrastructure
from bench.report import ROOT, save_report
from services.scoring import handlers
from services.scoring.main import build_spec
from services.scoring.rules.domain import default_rule_set
from services.scoring.scores.domain import (
    DAY,
    ContactScore,
    GroupState,
    RuleContribution,
    next_decay_timer,
)
from services.scoring.settings import ScoringSettings
from services.scoring.store import SqlStore
from shared import db, metrics
from shared.app import create_app
from shared.bus import Subscription
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot, ContactUpdated, FieldChange
from shared.events.envelope import Envelope
from shared.events.ingest import ENGAGEMENT_TYPES
from shared.migrations import upgrade

SECRET = "bench-secret-not-for-production-0123456789"
WORKSPACE = "bench"
GROUP = "scoring.engagement"
CONTACTS_GROUP = "scoring.contacts"
MIX = [  # (event type, share, extra fields)
    ("page.viewed", 0.20, {"url": "https://acme.io/pricing"}),
    ("page.viewed", 0.20, {"url": "https://acme.io/blog/post"}),
    ("email.opened", 0.25, {}),
    ("email.clicked", 0.10, {"url": "https://acme.io/l"}),
    ("content.downloaded", 0.05, {}),
    ("demo.requested", 0.05, {}),
    ("product.login", 0.10, {}),
    ("purchase.completed", 0.05, {"amount": "49.00", "currency": "EUR"}),
]
NEW_RULES: dict[str, Any] = {
    "thresholds": [{"name": "mql", "at": 50, "margin": 5}, {"name": "sql", "at": 80, "margin": 5}],
    "rules": [
        {
            "id": "pricing",
            "kind": "engagement",
            "event": "page.viewed",
            "when": [{"field": "url", "op": "contains", "value": "/pricing"}],
            "points": 12,
        },
        {"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 35},
        {
            "id": "opened",
            "kind": "engagement",
            "event": "email.opened",
            "points": 2,
            "limit": {"times": 3, "per_days": 30},
        },
        {"id": "clicked", "kind": "engagement", "event": "email.clicked", "points": 4},
        {
            "id": "senior",
            "kind": "fit",
            "when": [{"field": "job_title", "op": "contains_any", "value": ["VP", "Head"]}],
            "points": 15,
        },
    ],
}


def handled(group: str = GROUP) -> int:
    for family in metrics.EVENTS_CONSUMED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("group") == group:
                return int(sample.value)
    return 0


def settings_for(kafka: str, pg: str, prefix: str, **extra: Any) -> ScoringSettings:
    return ScoringSettings(
        bus="kafka",
        kafka_bootstrap=kafka,
        topic_prefix=prefix,
        database_url=pg,
        db_schema=prefix.rstrip(".") + "_scoring",
        auth_secret=SECRET,
        migrate_on_start=False,
        outbox_batch=2000,
        log_level="WARNING",
        **extra,
    )


async def migrated(pg: str, schema: str) -> AsyncEngine:
    engine = db.create_engine(pg, schema=schema)
    await upgrade(engine, build_spec().migrations, schema)
    return engine


async def drop(engine: AsyncEngine, schema: str) -> None:
    await drop_schemas(engine, schema)


async def preload_contacts(engine: AsyncEngine, count: int) -> None:
    """`count` contacts in scoring's projection, ids md5('c' || n)::uuid, every 4th a VP."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO contacts (workspace, contact_id, email, attributes, erased)
                SELECT :ws, md5('c' || g)::uuid::text, 'p' || g || '@acme.io',
                    jsonb_build_object('email', 'p' || g || '@acme.io',
                        'job_title', CASE WHEN g % 4 = 0 THEN 'VP Sales' ELSE 'Engineer' END,
                        'country', 'DE', 'subscription_status', 'subscribed',
                        'lifecycle_stage', 'lead', 'custom_fields', '{}'::jsonb),
                    false
                FROM generate_series(1, :n) AS g
                """
            ),
            {"ws": WORKSPACE, "n": count},
        )
        await conn.execute(text("ANALYZE contacts"))


def contact_id(n: int) -> str:
    import hashlib

    return str(uuid.UUID(hashlib.md5(f"c{n}".encode()).hexdigest()))


def engagement_messages(count: int, contacts: int) -> list[tuple[str, str, bytes]]:
    rng = random.Random(7)
    kinds = [(t, extra) for t, _, extra in MIX]
    weights = [share for _, share, _ in MIX]
    ids = [contact_id(n) for n in range(1, contacts + 1)]
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        event_type, extra = rng.choices(kinds, weights)[0]
        cid = ids[rng.randrange(contacts)]
        payload = ENGAGEMENT_TYPES[event_type](
            engagement_id=uuid.uuid4().hex,
            contact_id=cid,
            occurred_at=now - timedelta(seconds=count - i),
            **extra,
        )
        envelope = Envelope.of(payload, source="/leadwire/ingest", workspace=WORKSPACE)
        messages.append(
            (topics.ENGAGEMENT, topics.contact_key(WORKSPACE, cid), envelope.to_bytes())
        )
    return messages


async def publish(kafka: str, prefix: str, messages: Sequence[tuple[str, str, bytes]]) -> float:
    producer = KafkaBus(kafka, prefix=prefix)
    await producer.start()
    await producer.wait_connected(60)
    started = time.perf_counter()
    for i in range(0, len(messages), 2000):
        await producer.publish_batch(messages[i : i + 2000])
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def consume(
    engine: AsyncEngine, settings: ScoringSettings, group: str, events: int
) -> dict[str, Any]:
    """Start the app, wait until `group` handled `events`: the sustained rate and this
    process's CPU per event, from the first batch committed to the last."""
    app = create_app(build_spec(), settings)
    samples: list[tuple[float, int, float]] = []
    baseline = handled(group)
    async with app.router.lifespan_context(app):
        deadline = time.perf_counter() + 900
        done = 0
        while done < events and time.perf_counter() < deadline:
            done = handled(group) - baseline
            samples.append((time.perf_counter(), done, time.process_time()))
            await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            ledger = int(await conn.scalar(text("SELECT count(*) FROM ledger")) or 0)
            outbox = int(await conn.scalar(text("SELECT count(*) FROM outbox")) or 0)
    first = next(s for s in samples if s[1] > 0)
    last = samples[-1]
    rate = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0
    cpu_us = 1e6 * (last[2] - first[2]) / (last[1] - first[1]) if last[1] > first[1] else 0.0
    return {
        "handled": last[1],
        "ledger_rows": ledger,
        "outbox_unsent_at_end": outbox,
        "events_per_s": round(rate, 1),
        "app_process_cpu_us_per_event": round(cpu_us, 1),
    }


async def engagement_run(kafka: str, pg: str, events: int, contacts: int) -> dict[str, Any]:
    prefix = f"bsc{uuid.uuid4().hex[:8]}."
    settings = settings_for(kafka, pg, prefix)
    engine = await migrated(pg, settings.schema_for("scoring"))
    await preload_contacts(engine, contacts)
    publish_s = await publish(kafka, prefix, engagement_messages(events, contacts))
    measured = await consume(engine, settings, GROUP, events)
    await drop(engine, settings.schema_for("scoring"))
    return {"events": events, "contacts": contacts, "publish_s": round(publish_s, 2), **measured}


def snapshot_messages(count: int) -> list[tuple[str, str, bytes]]:
    """Per contact a `contact.created` and a `contact.updated` (job title now VP: its fit
    score moves), in that order on the contact's key."""
    now = datetime.now(UTC)
    messages = []
    for n in range(1, count // 2 + 1):
        cid = contact_id(n)
        values: dict[str, Any] = {
            "id": cid,
            "email": f"p{n}@acme.io",
            "job_title": "Engineer",
            "country": "DE",
            "lifecycle_stage": "lead",
            "subscription_status": "subscribed",
            "created_at": now,
            "updated_at": now,
        }
        created = ContactCreated(contact=ContactSnapshot(**values), cause="lead.captured")
        snapshot = ContactSnapshot(**(values | {"job_title": "VP Sales"}))
        updated = ContactUpdated(
            contact_id=cid,
            changes={"job_title": FieldChange(before="Engineer", after="VP Sales")},
            contact=snapshot,
            cause="api",
        )
        key = topics.contact_key(WORKSPACE, cid)
        for payload in (created, updated):
            envelope = Envelope.of(payload, source="/leadwire/contacts", workspace=WORKSPACE)
            messages.append((topics.CONTACTS, key, envelope.to_bytes()))
    return messages


async def set_aside_for_every_tenth(engine: AsyncEngine, contacts: int) -> None:
    """A demo request set aside for every 10th contact, arrived before the contact did."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO set_aside (workspace, contact_id, email, reason, type, occurred_at,
                    data, received_at)
                SELECT :ws, md5('c' || g)::uuid::text, NULL, 'unknown_contact',
                    'demo.requested', now() - interval '1 minute', '{}'::jsonb, now()
                FROM generate_series(10, :n, 10) AS g
                """
            ),
            {"ws": WORKSPACE, "n": contacts},
        )


async def snapshots_run(kafka: str, pg: str, events: int) -> dict[str, Any]:
    prefix = f"bsn{uuid.uuid4().hex[:8]}."
    settings = settings_for(kafka, pg, prefix)
    engine = await migrated(pg, settings.schema_for("scoring"))
    await set_aside_for_every_tenth(engine, events // 2)
    publish_s = await publish(kafka, prefix, snapshot_messages(events))
    measured = await consume(engine, settings, CONTACTS_GROUP, events // 2 * 2)
    async with engine.connect() as conn:
        scored = int(await conn.scalar(text("SELECT count(*) FROM scores")) or 0)
        waiting = int(await conn.scalar(text("SELECT count(*) FROM set_aside")) or 0)
    await drop(engine, settings.schema_for("scoring"))
    return {
        "events": events // 2 * 2,
        "contacts": events // 2,
        "scores_rows": scored,
        "set_aside_left": waiting,
        "publish_s": round(publish_s, 2),
        **measured,
    }


async def preload_ledger(engine: AsyncEngine, contacts: int, entries: int) -> float:
    """`entries` ledger rows spread evenly over `contacts`, over the last 90 days: inserted by
    one statement with the ledger's two secondary indexes dropped and built again afterwards
    (a sorted build is several times faster than maintaining them row by row: 20M rows)."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        await conn.execute(text("DROP INDEX ix_ledger_workspace_contact"))
        await conn.execute(text("DROP INDEX ix_ledger_workspace_occurred"))
        await conn.execute(
            text(
                """
                INSERT INTO ledger (workspace, contact_id, type, occurred_at, data)
                SELECT :ws, md5('c' || (1 + g % :contacts))::uuid::text,
                    (ARRAY['page.viewed','page.viewed','email.opened','email.clicked',
                           'demo.requested','content.downloaded'])[1 + g % 6],
                    now() - make_interval(secs => g % 7776000),
                    CASE WHEN g % 6 < 2 THEN jsonb_build_object('url',
                        CASE WHEN g % 12 = 0 THEN '/pricing' ELSE '/blog' END)
                         ELSE '{}'::jsonb END
                FROM generate_series(1, :n) AS g
                """
            ),
            {"ws": WORKSPACE, "contacts": contacts, "n": entries},
        )
        # The migration's indexes, by the migration's names.
        await conn.execute(
            text("CREATE INDEX ix_ledger_workspace_contact ON ledger (workspace, contact_id)")
        )
        await conn.execute(
            text("CREATE INDEX ix_ledger_workspace_occurred ON ledger (workspace, occurred_at)")
        )
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE ledger"))
    return time.perf_counter() - started


async def rescore_run(kafka: str, pg: str, contacts: int, entries: int) -> dict[str, Any]:
    prefix = f"bsr{uuid.uuid4().hex[:8]}."
    settings = settings_for(kafka, pg, prefix, scoring_rescore_poll_s=0.05)
    engine = await migrated(pg, settings.schema_for("scoring"))
    await preload_contacts(engine, contacts)
    preload_s = await preload_ledger(engine, contacts, entries)
    app = create_app(build_spec(), settings)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        started, cpu = time.perf_counter(), time.process_time()
        async with ctx.uow() as uow:
            job = await handlers.save_rule_set(
                WORKSPACE, NEW_RULES, SqlStore(uow.session), datetime.now(UTC)
            )
        status = job
        while status.status not in ("done", "failed") and time.perf_counter() - started < 1800:
            await asyncio.sleep(0.1)
            async with ctx.uow() as uow:
                found = await handlers.read_rescore(WORKSPACE, job.id, SqlStore(uow.session))
            status = found
        rescore_s = time.perf_counter() - started
        rescore_cpu_s = time.process_time() - cpu
        while await ctx.relay.publish_pending():
            pass
        published_s = time.perf_counter() - started
    await drop(engine, settings.schema_for("scoring"))
    return {
        "contacts": contacts,
        "ledger_entries": entries,
        "preload_s": round(preload_s, 1),
        "status": status.status,
        "rescored": status.done,
        "changed": status.changed,
        "rescore_s": round(rescore_s, 2),
        "app_process_cpu_s": round(rescore_cpu_s, 2),
        "rescore_and_events_published_s": round(published_s, 2),
    }


def crossing_state(due: float) -> tuple[dict[str, Any], float]:
    """A score above MQL (60 points of engagement, no fit) whose decay crosses 45 at `due`."""
    rules = default_rule_set()
    as_of = due - 30 * DAY * math.log2(60 / 45)
    state = ContactScore(
        0,
        {
            "overall": GroupState(
                as_of, {"demo-requested": RuleContribution(60, 60, [])}, {}, {"mql": True}
            )
        },
    )
    timer = next_decay_timer(state, rules, "overall")
    assert timer is not None
    return state.to_json(), timer


async def crossings_run(kafka: str, pg: str, count: int) -> dict[str, Any]:
    prefix = f"bsd{uuid.uuid4().hex[:8]}."
    settings = settings_for(kafka, pg, prefix)
    schema = settings.schema_for("scoring")
    engine = await migrated(pg, schema)
    await preload_contacts(engine, count)
    due = time.time() + 20  # time for the app to start and the reader to join first
    state, timer_at = crossing_state(due)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO scores (workspace, contact_id, version, state)
                SELECT workspace, contact_id, 0, CAST(:state AS jsonb) FROM contacts
                """
            ),
            {"state": json.dumps(state)},
        )
        await conn.execute(
            text(
                """
                INSERT INTO timers (workspace, contact_id, kind, "group", due_at)
                SELECT workspace, contact_id, 'decay', 'overall', :due FROM contacts
                """
            ),
            {"due": datetime.fromtimestamp(timer_at, UTC)},
        )
    arrivals: list[float] = []
    reader = KafkaBus(kafka, prefix=prefix)
    await reader.start()
    await reader.wait_connected(60)

    async def collect(events: Sequence[Envelope]) -> None:
        now = time.time()
        arrivals.extend(now for e in events if e.type == "score.threshold_crossed")

    consumer = await reader.subscribe(Subscription(f"{prefix}reader", (topics.SCORES,), collect))
    app = create_app(build_spec(), settings)
    async with app.router.lifespan_context(app):
        while time.time() < due:
            await asyncio.sleep(0.01)
        cpu = time.process_time()
        while len(arrivals) < count and time.time() < due + 120:
            await asyncio.sleep(0.05)
        cpu_s = time.process_time() - cpu
    await consumer.stop()
    await reader.stop()
    await drop(engine, schema)
    return {
        "crossings": count,
        "published_and_read_back": len(arrivals),
        "due_at_epoch": round(timer_at, 3),
        "started_before_due_s": 20,
        "first_after_due_s": round(min(arrivals) - timer_at, 3) if arrivals else None,
        "last_after_due_s": round(max(arrivals) - timer_at, 3) if arrivals else None,
        # This process (the app and the reader) from the due instant to the last arrival.
        "process_cpu_s": round(cpu_s, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--snapshots", type=int, default=20_000)
    parser.add_argument("--rescore-contacts", type=int, nargs="+", default=[100_000])
    parser.add_argument("--ledger-per-contact", type=int, default=20)
    parser.add_argument("--crossings", type=int, default=10_000)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["engagement", "snapshots", "rescore", "crossings"],
    )
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "scoring",
        "at": datetime.now(UTC).isoformat(),
        "command": "python -m bench.scoring_bench "
        + " ".join(
            [
                f"--events {args.events}",
                f"--contacts {args.contacts}",
                f"--snapshots {args.snapshots}",
                "--rescore-contacts " + " ".join(map(str, args.rescore_contacts)),
                f"--ledger-per-contact {args.ledger_per_contact}",
                f"--crossings {args.crossings}",
                *([f"--skip {' '.join(args.skip)}"] if args.skip else []),
            ]
        ),
        # The load average says how shared the machine was: figures under load are not the
        # code's alone (this process's CPU seconds are reported beside wall times for that).
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        },
        "targets": {
            "engagement_events_per_s": 5000,
            "rescore_100k_contacts_2m_entries_s": 60,
            "crossings_10k_all_published_within_s": 2,
        },
    }
    with infrastructure() as (kafka, pg):
        if "engagement" not in args.skip:
            report["engagement"] = await engagement_run(kafka, pg, args.events, args.contacts)
            print(json.dumps(report["engagement"]), flush=True)
        if "snapshots" not in args.skip:
            report["snapshots"] = await snapshots_run(kafka, pg, args.snapshots)
            print(json.dumps(report["snapshots"]), flush=True)
        if "crossings" not in args.skip:
            report["crossings"] = await crossings_run(kafka, pg, args.crossings)
            print(json.dumps(report["crossings"]), flush=True)
        if "rescore" not in args.skip:
            report["rescore"] = []
            for size in args.rescore_contacts:
                result = await rescore_run(kafka, pg, size, size * args.ledger_per_contact)
                report["rescore"].append(result)
                print(json.dumps(result), flush=True)
    report["machine"]["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    path = save_report("scoring", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
