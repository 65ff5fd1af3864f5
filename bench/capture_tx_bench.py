"""The contacts capture transaction on its own, on real PostgreSQL: what one batch of captured
leads costs, without Kafka, the relay or the other services around it.

A fresh schema, a workspace whose new contacts get an owner from a round-robin team of two at
capture (recipe 1's rule), and `--rounds` transactions run the way the leads consumer runs
them: `capture_leads` of `--batch` new leads, the inbox claim made at commit. Reported per
transaction (the first `--warmup` rounds left out): wall time p50/p90, this process's CPU,
statements sent (BEGIN and COMMIT not counted), and how long the team's row stays locked (from
the rotation's read to the end of the commit) with the CPU spent meanwhile.

Usage: `.venv/bin/python -m bench.capture_tx_bench [--batch 1] [--rounds 300]`, under
`flock /tmp/leadwire-bench.lock`. Uses DATABASE_URL (postgresql+asyncpg) when set, otherwise
throwaway servers (`bench.infra`). Writes bench/results/capture-tx-<ts>.json.
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

from sqlalchemy import event

from bench.infra import drop_schemas, infrastructure
from bench.report import ROOT, save_report
from services.contacts.captures import handlers as captures
from services.contacts.captures.store import CapturesStore, CaptureView
from services.contacts.main import SPEC
from services.contacts.owners import handlers as owners
from services.contacts.owners.domain import CaptureTeam
from services.contacts.owners.store import OwnersStore
from services.contacts.store import over, transaction
from shared import db
from shared.events.ingest import LeadCaptured
from shared.migrations import upgrade
from shared.uow import UnitOfWork

WORKSPACE = "capture-bench"


def new_lead() -> LeadCaptured:
    email = f"tx-{uuid.uuid4().hex[:12]}@bench.example"
    return LeadCaptured(
        submission_id=uuid.uuid4().hex,
        source="form",
        source_id="form-1",
        dedupe_key=f"email:{email}",
        email=email,
        first_name="Ada",
        last_name="Lovelace",
        company="Acme",
        tags=["webinar"],
        custom_fields={"industry": "Fintech"},
        captured_at=datetime.now(UTC),
    )


class LockClock:
    """When the team's rotation was read (its row locked) in the current transaction: by the
    rotation's own read, or by the capture view of a small batch (`rotation`)."""

    def __init__(self) -> None:
        self.at = self.cpu = 0.0

    def install(self) -> None:
        read, view = OwnersStore.capture_rotation, CapturesStore.capture_view
        clock = self

        async def timed(store: OwnersStore, workspace: str) -> CaptureTeam | None:
            found = await read(store, workspace)
            clock.at, clock.cpu = time.perf_counter(), time.process_time()
            return found

        async def timed_view(store: CapturesStore, *args: Any, **kwargs: Any) -> CaptureView:
            found = await view(store, *args, **kwargs)
            if found.rotation_read:
                clock.at, clock.cpu = time.perf_counter(), time.process_time()
            return found

        OwnersStore.capture_rotation = timed  # type: ignore[method-assign,assignment]
        CapturesStore.capture_view = timed_view  # type: ignore[method-assign,assignment]


def p(values: list[float], q: int) -> float:
    return round(1000 * statistics.quantiles(values, n=100)[q - 1], 2)


async def run(url: str, batch: int, rounds: int, warmup: int) -> dict[str, Any]:
    schema = f"capturetx{uuid.uuid4().hex[:8]}"
    engine = db.create_engine(url, schema=schema)
    await upgrade(engine, SPEC.migrations, schema)
    sessions = db.sessionmaker(engine)

    def uow() -> UnitOfWork:
        return UnitOfWork(sessions, SPEC.outbox, SPEC.inbox)

    try:
        async with transaction(uow()) as tx:
            team = await owners.create_team(WORKSPACE, "Sales", "round_robin", tx)
            for name in ("ann", "bob"):
                data = {"name": name, "email": f"{name}@bench.example", "team_id": team.id}
                await owners.save_owner(WORKSPACE, None, data, tx)
            await owners.set_capture_assignment(WORKSPACE, team.id, tx, datetime.now(UTC))
        sent = 0

        def count(*_: Any) -> None:
            nonlocal sent
            sent += 1

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        lock = LockClock()
        lock.install()
        wall, cpu, statements, held, held_cpu = [], [], [], [], []
        for _ in range(warmup + rounds):
            leads = [
                captures.CapturedLead(WORKSPACE, new_lead(), uuid.uuid4().hex) for _ in range(batch)
            ]
            before = sent
            started, started_cpu = time.perf_counter(), time.process_time()
            unit = uow()
            async with unit:
                unit.claim_at_commit("contacts.leads", [uuid.uuid4().hex for _ in leads])
                await captures.capture_leads(leads, over(unit), datetime.now(UTC))
            ended, ended_cpu = time.perf_counter(), time.process_time()
            wall.append(ended - started)
            cpu.append(ended_cpu - started_cpu)
            statements.append(sent - before)
            held.append(ended - lock.at)
            held_cpu.append(ended_cpu - lock.cpu)
            await asyncio.sleep(0.005)  # one transaction at a time, as an idle consumer's
        keep = slice(warmup, None)
        return {
            "batch": batch,
            "rounds": rounds,
            "tx_ms": {"p50": p(wall[keep], 50), "p90": p(wall[keep], 90)},
            "tx_cpu_ms_p50": round(1000 * statistics.median(cpu[keep]), 2),
            "statements_per_tx": statistics.mean(statements[keep]),
            "team_locked_ms_p50": round(1000 * statistics.median(held[keep]), 2),
            "cpu_while_locked_ms_p50": round(1000 * statistics.median(held_cpu[keep]), 2),
        }
    finally:
        await drop_schemas(engine, schema)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 25], help="leads a batch")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        results = [await run(url, size, args.rounds, args.warmup) for size in args.batch]
    else:
        with infrastructure() as (_, pg):
            results = [await run(pg, size, args.rounds, args.warmup) for size in args.batch]
    report = {
        "benchmark": "capture-tx",
        "at": datetime.now(UTC).isoformat(),
        "command": "python -m bench.capture_tx_bench --batch "
        + " ".join(map(str, args.batch))
        + f" --rounds {args.rounds} --warmup {args.warmup}",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "results": results,
    }
    path = save_report("capture-tx", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
