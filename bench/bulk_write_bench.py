"""Bulk-write benchmark on real PostgreSQL: which one-statement insert to use for which rows.

Two techniques write the same batches into the same tables:

- unnest: `INSERT … SELECT FROM unnest(<one typed array per column>)` (`shared.db.insert_rows`);
- json: `INSERT … SELECT FROM json_populate_recordset(NULL::<table>, <one JSON document>)`
  (`shared.db.insert_json_rows`); bytea travels as `\\x<hex>` text in the document.

and two kinds of rows: `wide` (a contact: 18 columns of text, timestamps, a float, a boolean
and a JSONB document) and `bytes` (an outbox row: four short columns and a 1 KB bytea event).
Each batch is one transaction; the figures are rows per second (wall) and the client's CPU per
row (this process: SQLAlchemy, the encoders and asyncpg), best and spread over the rounds.

Usage: `.venv/bin/python -m bench.bulk_write_bench [--batch 2000] [--rounds 15]`. Uses
DATABASE_URL (postgresql+asyncpg) when set, otherwise a throwaway PostgreSQL. Writes
bench/results/bulk-write-<ts>.json.
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    text,
)

from bench.infra import drop_schemas
from bench.report import ROOT, save_report
from shared import db
from shared.db import AsyncSession, Json, UtcDateTime

metadata = MetaData()
WIDE = Table(
    "wide",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace", String(63)),
    *(
        Column(name, String(200))
        for name in ("email", "phone", "first_name", "last_name", "company", "job_title")
    ),
    Column("country", String(2)),
    Column("source", String(40)),
    Column("lifecycle_stage", String(20)),
    Column("owner_id", String(36)),
    Column("custom_fields", Json),
    Column("score", Float),
    Column("unsubscribed", Boolean),
    Column("created_at", UtcDateTime),
    Column("updated_at", UtcDateTime),
    Column("last_interaction_at", UtcDateTime),
)
BYTES = Table(
    "bytes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("topic", String(200)),
    Column("key", String(400)),
    Column("payload", LargeBinary),
    Column("created_at", UtcDateTime),
)


def wide_rows(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": str(uuid.uuid4()),
            "workspace": "bench",
            "email": f"person.{i}.{uuid.uuid4().hex[:6]}@example.com",
            "phone": f"+4420{i:08d}",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "company": "Analytical Engines Ltd",
            "job_title": "Head of Computing",
            "country": "GB",
            "source": "form",
            "lifecycle_stage": "lead",
            "owner_id": None,
            "custom_fields": {"plan": "pro", "seats": i % 50, "tags": ["a", "b"]},
            "score": i * 0.5,
            "unsubscribed": False,
            "created_at": now,
            "updated_at": now,
            "last_interaction_at": now - timedelta(days=i % 30),
        }
        for i in range(n)
    ]


def bytes_rows(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    body = json.dumps({"data": {"email": "ada@example.com", "note": "x" * 900}}).encode()
    return [
        {
            "id": str(uuid.uuid4()),
            "topic": "leadwire.leads.v1",
            "key": f"bench:email:{i}@example.com",
            "payload": body,
            "created_at": now,
        }
        for i in range(n)
    ]


async def by_unnest(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    await db.insert_rows(session, table, rows)


async def by_json(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if table is BYTES:  # bytea as PostgreSQL's hex text form inside the JSON document
        rows = [{**r, "payload": "\\x" + r["payload"].hex()} for r in rows]
    await db.insert_json_rows(session, table, rows)


Technique = Callable[[AsyncSession, Table, Sequence[dict[str, Any]]], Awaitable[None]]


async def measure(
    url: str,
    schema: str,
    table: Table,
    make: Callable[[int], list[dict[str, Any]]],
    technique: Technique,
    batch: int,
    rounds: int,
) -> dict[str, Any]:
    engine = db.create_engine(url, schema=schema)
    sessions = db.sessionmaker(engine)
    walls, cpus = [], []
    try:
        for round_ in range(rounds + 2):  # two unreported warm-up rounds
            rows = make(batch)
            cpu, wall = time.process_time(), time.perf_counter()
            async with sessions() as session, session.begin():
                await technique(session, table, rows)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_ >= 2:
                walls.append(wall)
                cpus.append(cpu)
        async with engine.begin() as conn:
            await conn.execute(text(f'TRUNCATE "{schema}"."{table.name}"'))
    finally:
        await engine.dispose()
    rates = sorted(batch / w for w in walls)
    return {
        "rows_per_s_best": round(rates[-1]),
        "rows_per_s_median": round(statistics.median(rates)),
        "rows_per_s_worst": round(rates[0]),
        "client_cpu_us_per_row_median": round(statistics.median(cpus) / batch * 1e6, 2),
        "client_cpu_us_per_row_best": round(min(cpus) / batch * 1e6, 2),
    }


@contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        yield url
        return
    from tests.infra import start_postgres

    state = ROOT / ".leadwire" / "bench" / f"bulk-{os.getpid()}"
    server = start_postgres(state)
    try:
        yield server.url
    finally:
        server.stop(remove_data=True)


async def run(url: str, batch: int, rounds: int) -> dict[str, Any]:
    schema = f"bulk_{uuid.uuid4().hex[:8]}"
    engine = db.create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(
            lambda c: metadata.create_all(c.execution_options(schema_translate_map={None: schema}))
        )
    results: dict[str, Any] = {}
    try:
        for name, table, make in (("wide", WIDE, wide_rows), ("bytes", BYTES, bytes_rows)):
            for technique_name, technique in (("unnest", by_unnest), ("json", by_json)):
                figures = await measure(url, schema, table, make, technique, batch, rounds)
                results[f"{name}/{technique_name}"] = figures
                print(f"{name:5} {technique_name:6} {figures}", flush=True)
    finally:
        await drop_schemas(engine, schema)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with postgres() as url:
        results = asyncio.run(run(url, args.batch, args.rounds))
    when = datetime.now(UTC)
    document = {
        "benchmark": "bulk-write",
        "when": when.isoformat(),
        "command": f"python -m bench.bulk_write_bench --batch {args.batch} --rounds {args.rounds}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "batch": args.batch,
        "rounds": args.rounds,
        "results": results,
    }
    path = save_report("bulk-write", document)
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
