"""Contacts benchmark on real PostgreSQL and Kafka.

1. Upsert throughput: `--leads` captured leads are published to Kafka first; then one contacts
   process (the real app: Kafka consumer, one transaction per polled batch, outbox relay) is
   started and the rate at which its consumer commits them is measured (read from its own
   events-handled counter; the inbox is checked at the end), from the first batch committed
   to the last (sustained, consumer-group join excluded). Run at each `--sizes` table size
   (contacts already present), so the throughput at 1,000,000 can be compared with 10,000.
2. Segment count: a three-condition filter compiled to SQL over the table of that size.

Usage: `.venv/bin/python -m bench.contacts_bench [--sizes 10000 1000000] [--leads 50000]
[--warmup-leads 20000]`.
Uses DATABASE_URL (postgresql+asyncpg) and LEADWIRE_KAFKA_BOOTSTRAP when set, otherwise
starts throwaway servers like the test session does. Writes bench/results/contacts-<ts>.json.
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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.infra import drop_schemas, infrastructure
from bench.report import ROOT, save_report
from services.contacts import domain
from services.contacts.main import build_spec
from services.contacts.models import inbox
from services.contacts.segments import domain as segments_domain
from services.contacts.store import ContactsStore
from shared import db, metrics
from shared.app import create_app
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.envelope import Envelope
from shared.events.ingest import LeadCaptured, Utm
from shared.migrations import upgrade
from shared.settings import Settings

SECRET = "bench-secret-not-for-production-0123456789"
WORKSPACE = "bench"
GROUP = "contacts.leads"
SEGMENT = {
    "and": [
        {"field": "lifecycle_stage", "op": "eq", "value": "lead"},
        {"field": "score", "op": "gte", "value": 50},
        {"field": "last_interaction_at", "op": "older_than_days", "value": 30},
    ]
}
SEGMENT_WITH_TAG = {
    "and": [
        {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
        {"field": "tags", "op": "contains", "value": "webinar"},
        {"field": "subscription_end_date", "op": "within_next_days", "value": 30},
    ]
}


def handled() -> int:
    """Leads the app's consumer has handled and committed so far (its own counter: polling the
    inbox's size from here took a tenth of PostgreSQL's time during the measurement)."""
    for family in metrics.EVENTS_CONSUMED.collect():  # this one metric, not the registry
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("group") == GROUP:
                return int(sample.value)
    return 0


async def preload(engine: AsyncEngine, size: int) -> float:
    """`size` contacts (plus tags) written set-wise by PostgreSQL itself."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                INSERT INTO contacts (id, workspace, email, phone, first_name, last_name, company,
                    lifecycle_stage, subscription_status, score, custom_fields, created_at,
                    updated_at, last_interaction_at)
                SELECT md5('c' || g)::uuid::text, :ws, 'pre' || g || '@example.com', NULL,
                    'First' || g, 'Last' || g, 'Company ' || (g % 5000),
                    (ARRAY['subscriber','lead','mql','sql','opportunity','customer'])[1 + g % 6],
                    'subscribed', (g::bigint * 7919 % 100)::float,
                    jsonb_build_object('industry', 'Industry ' || (g % 20),
                        'subscription_end_date',
                        to_char(now() + ((g % 365) || ' days')::interval, 'YYYY-MM-DD')),
                    now() - ((g % 700) || ' days')::interval, now(),
                    now() - ((g % 90) || ' days')::interval
                FROM generate_series(1, :n) AS g
                """
            ),
            {"ws": WORKSPACE, "n": size},
        )
        await conn.execute(
            text(
                """
                INSERT INTO contact_tags (contact_id, tag, workspace)
                SELECT md5('c' || g)::uuid::text,
                    (ARRAY['webinar','pricing','newsletter'])[1 + g % 3], :ws
                FROM generate_series(1, :n) AS g WHERE g % 2 = 0
                """
            ),
            {"ws": WORKSPACE, "n": size},
        )
        await conn.execute(text("ANALYZE contacts"))
        await conn.execute(text("ANALYZE contact_tags"))
    return time.perf_counter() - started


def leads(count: int, size: int) -> list[tuple[str, str, bytes]]:
    """Captured leads: 80 % new people, 20 % people already in the table (updates)."""
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        if i % 5 == 0 and size:
            email = f"pre{1 + (i * 7919) % size}@example.com"
        else:
            email = f"new-{uuid.uuid4().hex}@example.com"
        payload = LeadCaptured(
            submission_id=uuid.uuid4().hex,
            source="form",
            source_id="form-1",
            dedupe_key=f"email:{email}",
            email=email,
            first_name="Bench",
            last_name=f"Lead{i}",
            company=f"Company {i % 1000}",
            custom_fields={"industry": "Retail"},
            tags=["webinar"] if i % 3 == 0 else [],
            utm=Utm(source="google", campaign="bench"),
            captured_at=now,
        )
        envelope = Envelope.of(payload, source="/leadwire/ingest", workspace=WORKSPACE)
        key = topics.contact_key(WORKSPACE, payload.dedupe_key)
        messages.append((topics.LEADS, key, envelope.to_bytes()))
    return messages


async def segment_counts(engine: AsyncEngine, runs: int = 5) -> dict[str, Any]:
    now = datetime.now(UTC)
    definitions = domain.DEFAULT_FIELDS
    out: dict[str, Any] = {}
    sessions = db.sessionmaker(engine)
    for name, raw in (("three_conditions", SEGMENT), ("tag_and_relative_date", SEGMENT_WITH_TAG)):
        node = segments_domain.parse_filter(raw, definitions)
        timings, count = [], 0
        for _ in range(runs):
            async with sessions() as session:
                started = time.perf_counter()
                count = await ContactsStore(session).count(WORKSPACE, node, now)
                timings.append(time.perf_counter() - started)
        out[name] = {
            "filter": raw,
            "count": count,
            "median_s": round(statistics.median(timings), 4),
            "max_s": round(max(timings), 4),
        }
    return out


async def run_size(pg: str, kafka: str, size: int, count: int, batch: int) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    schema = prefix.rstrip(".") + "_contacts"
    settings = Settings(
        bus="kafka",
        kafka_bootstrap=kafka,
        topic_prefix=prefix,
        database_url=pg,
        db_schema=schema,
        auth_secret=SECRET,
        migrate_on_start=False,
        consumer_max_batch=batch,
        outbox_batch=2000,
        log_json=True,
        log_level="WARNING",
    )
    engine = db.create_engine(pg, schema=schema)
    await upgrade(engine, build_spec().migrations, schema)
    preload_s = await preload(engine, size) if size else 0.0

    producer = KafkaBus(kafka, prefix=prefix, partitions=settings.topic_partitions)
    await producer.start()
    await producer.wait_connected(60)
    messages = leads(count, size)
    started = time.perf_counter()
    for i in range(0, len(messages), 2000):
        await producer.publish_batch(messages[i : i + 2000])
    publish_s = time.perf_counter() - started
    await producer.stop()

    app = create_app(build_spec(sweep_interval_s=3600), settings)
    samples: list[tuple[float, int, float]] = []
    baseline = handled()
    async with app.router.lifespan_context(app):
        deadline = time.perf_counter() + 600
        done = 0
        while done < count and time.perf_counter() < deadline:
            done = handled() - baseline
            samples.append((time.perf_counter(), done, time.process_time()))
            await asyncio.sleep(0.05)
        relay_backlog = 0
        async with engine.connect() as conn:
            relay_backlog = int(
                await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")) or 0
            )
            in_inbox = int(
                await conn.scalar(
                    select(func.count()).select_from(inbox).where(inbox.c.consumer == GROUP)
                )
                or 0
            )
    first = next(s for s in samples if s[1] > 0)
    last = samples[-1]
    sustained = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0
    # CPU of this process (the app, its relay and this sampling loop) per lead, same window.
    cpu_us = 1e6 * (last[2] - first[2]) / (last[1] - first[1]) if last[1] > first[1] else 0.0
    async with engine.connect() as conn:
        contacts = int(await conn.scalar(text("SELECT count(*) FROM contacts")) or 0)
    segments = await segment_counts(engine)
    await drop_schemas(engine, schema)
    return {
        "contacts_before": size,
        "preload_s": round(preload_s, 2),
        "leads": count,
        "processed": in_inbox,
        "publish_s": round(publish_s, 2),
        "upsert_leads_per_s": round(sustained, 1),
        "app_process_cpu_us_per_lead": round(cpu_us, 1),
        "consumer_max_batch": batch,
        "contacts_after": contacts,
        "outbox_unsent_at_end": relay_backlog,
        "segment_count": segments,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="consumer_max_batch")
    parser.add_argument(
        "--warmup-leads",
        type=int,
        default=20_000,
        help="an unreported round first: a broker just started spends a third of a core "
        "compiling its hot paths (JIT) during its first minute, on this 2-core machine",
    )
    args = parser.parse_args()
    with infrastructure() as (kafka, pg):
        warmup = None
        if args.warmup_leads:
            warmup = await run_size(pg, kafka, 0, args.warmup_leads, args.batch)
        results = [await run_size(pg, kafka, size, args.leads, args.batch) for size in args.sizes]
    by_size = {r["contacts_before"]: r for r in results}
    ratio = None
    if len(results) >= 2 and results[0]["upsert_leads_per_s"]:
        ratio = round(results[-1]["upsert_leads_per_s"] / results[0]["upsert_leads_per_s"], 3)
    report = {
        "benchmark": "contacts",
        "at": datetime.now(UTC).isoformat(),
        "command": "python -m bench.contacts_bench "
        + " ".join(
            [
                "--sizes",
                *map(str, args.sizes),
                "--leads",
                str(args.leads),
                "--batch",
                str(args.batch),
                "--warmup-leads",
                str(args.warmup_leads),
            ]
        ),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "warmup": warmup,
        "results": results,
        "throughput_ratio_largest_to_smallest": ratio,
        "targets": {
            "upsert_leads_per_s": 5000,
            "segment_count_s_at_1m": 1.0,
            "throughput_ratio": 0.75,
        },
        "sizes": sorted(by_size),
    }
    path = save_report("contacts", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
