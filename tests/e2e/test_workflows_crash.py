"""Fault: a real workflows process SIGKILLed twice in the middle of runs and restarted. Every
run finishes (none lost) and every step's effect was produced once: one envelope id per
enrollment and step, however often the outbox re-sent it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.workflows.engine.domain import enrollment_of_key
from tests.conftest import ROOT, unique
from tests.helpers import SECRET, eventually, token
from tests.infra import free_port
from tests.integration.workflows.conftest import DRIP, start_driver

CONTACTS = 150
# DRIP with longer waits: a run needs 6 s at least, so the first kill (1.2 s in) finds every run
# in flight even when the stats call behind it is slow on a loaded machine.
CRASH_DRIP: dict[str, Any] = DRIP | {
    "steps": [
        step | {"duration": {"seconds": 3}} if step["type"] == "wait" else step
        for step in DRIP["steps"]
    ]
}


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services", "serve", "workflows", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def step_of(key: str) -> str:
    return key.split(":")[2]


@pytest.mark.kafka
@pytest.mark.postgres
async def test_sigkill_mid_run_loses_nothing_and_repeats_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    prefix = unique("crash") + "."
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LEADWIRE_TOPIC_PREFIX": prefix,
        "DATABASE_URL": postgres_url,
        "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_LOG_LEVEL": "WARNING",
    }
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services", "migrate", "workflows"],
        env=env, cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "workflows.log"
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    headers = token(workspace, "workflows:read", "workflows:write")
    driver, reader = await start_driver(kafka_bootstrap, prefix, workspace)
    process = serve(env, port, log)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=90)
            created = await client.post(
                "/v1/workflows", json=CRASH_DRIP, params={"enabled": True}, headers=headers
            )
            assert created.status_code == 201, created.text
            workflow = created.json()["id"]
            contacts = await driver.contacts(CONTACTS)
            # Killed while enrolling, then (when runs are still waiting) while timers fire.
            for kill, pause in enumerate((1.2, 1.5)):
                await asyncio.sleep(pause)
                stats = (
                    await client.get(f"/v1/workflows/{workflow}/stats", headers=headers)
                ).json()
                if kill == 0:
                    assert stats["completed"] < CONTACTS  # killed with runs in flight
                elif stats["completed"] == CONTACTS:
                    break  # a slow restart let every run finish: nothing left to interrupt
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                process = serve(env, port, log)
                await eventually(ready, timeout=90)

            async def all_completed() -> bool:
                page = await client.get(
                    f"/v1/workflows/{workflow}/enrollments", params={"limit": 500}, headers=headers
                )
                items: list[dict[str, Any]] = page.json()["items"]
                return len(items) >= CONTACTS and all(r["status"] == "completed" for r in items)

            await eventually(all_completed, timeout=180)
            runs = (
                await client.get(
                    f"/v1/workflows/{workflow}/enrollments", params={"limit": 500}, headers=headers
                )
            ).json()["items"]

            async def all_received() -> bool:
                return len({e.id for e in driver.of("notification.requested")}) >= CONTACTS

            await eventually(all_received, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        await reader.stop()
        await driver.bus.stop()

    # No run lost, none doubled: one run per contact, each completed.
    assert sorted(r["contact_id"] for r in runs) == sorted(contacts)
    # No effect twice: per enrollment and step, exactly one envelope id (re-sends share it).
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for envelope in driver.of("contact.add_tag", "notification.requested"):
        key = envelope.data.get("idempotency_key") or ""
        if envelope.type == "contact.add_tag":
            enrollment = next(
                r["id"] for r in runs if r["contact_id"] == envelope.data["contact_id"]
            )
            ids[(enrollment, envelope.data["tag"])].add(envelope.id)
        else:
            ids[(enrollment_of_key(key) or "", step_of(key))].add(envelope.id)
    assert len(ids) == CONTACTS * 3
    assert all(len(found) == 1 for found in ids.values()), [k for k, v in ids.items() if len(v) > 1]
