"""What a benchmark's statements cost PostgreSQL: runs a command and reports, from
pg_stat_statements, the change over the run of every statement whose text matches a pattern
(calls, rows, milliseconds and shared blocks per call, and plans made and their milliseconds
where the server tracks planning), summed over the schemas that ran it.

Usage: `.venv/bin/python -m bench.pg_statements [--match outbox] [--top 12] -- <command...>`,
for example `-- .venv/bin/python -m bench.workflows_bench`. Needs DATABASE_URL (a PostgreSQL
with pg_stat_statements loaded). Nothing is reset: the server may be shared, so the figures are
differences of two snapshots, and other sessions' statements of the same text count too (small
beside a benchmark's). Writes bench/results/pg-statements-<ts>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]

from bench.report import save_report

FIELDS = (
    "calls",
    "rows",
    "total_exec_time",
    "shared_blks_hit",
    "shared_blks_read",
    # Zero unless the server counts planning (`pg_stat_statements.track_planning = on`).
    "plans",
    "total_plan_time",
)

Totals = dict[str, dict[str, float]]


async def snapshot(dsn: str, match: str) -> Totals:
    """Every matching statement's counters, summed by its text (one queryid per schema)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT query, {', '.join(FIELDS)} FROM pg_stat_statements"
            " WHERE query ILIKE '%' || $1 || '%'",
            match,
        )
    finally:
        await conn.close()
    totals: Totals = defaultdict(lambda: dict.fromkeys(FIELDS, 0.0))
    for row in rows:
        for field in FIELDS:
            totals[row["query"]][field] += float(row[field])
    return totals


def difference(before: Totals, after: Totals) -> list[dict[str, object]]:
    found = []
    for query, now in after.items():
        was = before.get(query, dict.fromkeys(FIELDS, 0.0))
        delta = {field: now[field] - was[field] for field in FIELDS}
        calls = delta["calls"]
        if calls <= 0:
            continue
        blocks = delta["shared_blks_hit"] + delta["shared_blks_read"]
        found.append(
            {
                "query": " ".join(query.split())[:300],
                "calls": int(calls),
                "rows": int(delta["rows"]),
                "total_ms": round(delta["total_exec_time"], 1),
                "ms_per_call": round(delta["total_exec_time"] / calls, 3),
                "plans": int(delta["plans"]),
                "plan_ms": round(delta["total_plan_time"], 1),
                "blocks_per_call": round(blocks / calls, 1),
            }
        )
    return sorted(
        found,
        key=lambda s: -float(s["total_ms"]) - float(s["plan_ms"]),  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--match", default="outbox")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    before = asyncio.run(snapshot(dsn, args.match))
    load_before = os.getloadavg()[0]
    code = subprocess.call(command)
    after = asyncio.run(snapshot(dsn, args.match))
    statements = difference(before, after)
    result = {
        "benchmark": "pg-statements",
        "at": datetime.now(UTC).isoformat(),
        "command": command,
        "exit_code": code,
        "match": args.match,
        "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # Over every matching statement, not only the top ones listed.
        "exec_ms": round(sum(float(str(s["total_ms"])) for s in statements), 1),
        "plan_ms": round(sum(float(str(s["plan_ms"])) for s in statements), 1),
        "statements": statements[: args.top],
    }
    print(json.dumps(result, indent=2))
    save_report("pg-statements", result)
    sys.exit(code)


if __name__ == "__main__":
    main()
