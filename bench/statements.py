"""PostgreSQL's per-statement figures around a benchmark run, from pg_stat_statements.

`reset` empties the server's counters before a run; `report` prints the statements that took
the most time since then (calls, mean ms a call, rows and shared blocks a call, the start of
the text) and saves them as JSON. The server is shared: statements of other work running at
the same time show too, so compare per-call figures of the statements a run is about.

    .venv/bin/python -m bench.statements reset
    .venv/bin/python -m bench.speed_to_lead --rates 500 --seconds 10 --drain 30
    .venv/bin/python -m bench.statements report --top 25 --out bench/results/statements-X.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

TOP = """
SELECT calls, rows, total_exec_time, shared_blks_hit + shared_blks_read AS blocks, query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT $1
"""


def _url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        raise SystemExit("DATABASE_URL must name the PostgreSQL server the benchmark used")
    return url.replace("+asyncpg", "")


async def reset() -> None:
    conn = await asyncpg.connect(_url())
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def report(top: int, grep: str | None) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(_url())
    try:
        rows = await conn.fetch(TOP, top * 4 if grep else top)
    finally:
        await conn.close()
    found = []
    for row in rows:
        text = " ".join(row["query"].split())
        if grep and grep not in text:
            continue
        calls = row["calls"] or 1
        found.append(
            {
                "calls": row["calls"],
                "total_ms": round(row["total_exec_time"], 1),
                "mean_ms": round(row["total_exec_time"] / calls, 3),
                "rows_per_call": round(row["rows"] / calls, 1),
                "blocks_per_call": round(row["blocks"] / calls, 1),
                "query": text[:400],
            }
        )
    return found[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["reset", "report"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", help="only statements whose text contains this")
    parser.add_argument("--out", type=Path, help="also save the report here (JSON)")
    args = parser.parse_args()
    if args.action == "reset":
        asyncio.run(reset())
        return
    found = asyncio.run(report(args.top, args.grep))
    for s in found:
        print(
            f"{s['calls']:>8} {s['total_ms']:>10.1f} ms {s['mean_ms']:>8.3f} ms/call "
            f"{s['rows_per_call']:>7.1f} rows {s['blocks_per_call']:>8.1f} blk  {s['query'][:150]}"
        )
    if args.out:
        at = datetime.now(UTC).isoformat()
        args.out.write_text(json.dumps({"at": at, "statements": found}, indent=2) + "\n")
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
