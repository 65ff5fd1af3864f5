"""The fault suite (`make test-faults`): ingest and contacts as separate processes on a real
Kafka broker and a durable PostgreSQL of the suite's own, under steady open-loop load through
the leads API and a hosted form, while one thing at a time goes wrong.

After each run the load drains and is reconciled: every lead that got a 2xx is exactly one
contact; no 5xx other than 503 with Retry-After; no dead letter except the poison put there on
purpose, which carries its error and replays; nothing waits forever. The figures of every run
are printed and saved under bench/results/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from bench.report import save_report
from shared.bus.kafka import KafkaBus
from shared.events import topics
from tests.faults.load import Load
from tests.faults.stack import ROOT, FaultStack
from tests.helpers import token
from tests.infra import fetch_kafka_jars

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres]

REPETITIONS = 3
RATE = 20.0  # leads per second, half API, half hosted form
FAULT_AT_S = 2.0  # into the load
LOAD_AFTER_REPAIR_S = 3.0  # the load goes on this long once everything is ready again
DRAIN_TIMEOUT_S = 120.0  # "nothing waits forever": every accepted lead is a contact by then
# The topics contacts consumes: each gets a poison message.
CONSUMED = (
    topics.LEADS,
    topics.ENGAGEMENT,
    topics.CONTACT_COMMANDS,
    topics.SCORES,
    topics.NOTIFICATIONS,
)
LAST_DEAD_LETTERS: dict[str, dict[str, int]] = {}
# httpx's names for a connection refused, reset or closed under a request.
RESETS = frozenset({"ConnectError", "ReadError", "WriteError", "RemoteProtocolError"})


def started_stack(name: str, socket: bool = False) -> Iterator[FaultStack]:
    state = ROOT / ".leadwire" / "faults" / f"{os.getpid()}-{name}"
    started = FaultStack.start(state, fetch_kafka_jars(ROOT), socket)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    yield from started_stack("tcp")


@pytest.fixture(scope="module")
def socket_stack() -> Iterator[FaultStack]:
    """A second stack, whose services reach PostgreSQL over its Unix socket."""
    yield from started_stack("socket", socket=True)


@pytest.fixture(scope="module")
def results() -> Iterator[list[dict[str, Any]]]:
    collected: list[dict[str, Any]] = []
    yield collected
    if not collected:
        return
    report = {
        "command": "make test-faults",
        "rate_per_s": RATE,
        "repetitions": REPETITIONS,
        "runs": collected,
    }
    path = save_report("faults", report)
    print(f"\n{table(collected)}\nsaved {path.relative_to(ROOT)}")


def table(runs: list[dict[str, Any]]) -> str:
    columns = (
        "scenario",
        "run",
        "accepted",
        "contacts",
        "missing",
        "duplicates",
        "5xx",
        "503",
        "resets",
        "timeouts",
        "dlq_new",
        "recovered_s",
        "drained_s",
    )
    lines = [" ".join(f"{c:>11}" for c in columns)]
    for r in runs:
        lines.append(" ".join(f"{r[c]!s:>11}" for c in columns))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the faults


@dataclass
class Run:
    """One repetition of one scenario: its workspace, form, load and what the fault did."""

    stack: FaultStack
    scenario: str
    workspace: str
    load: Load
    repaired_at: float = 0.0  # time.time() when the broken part was restarted
    notes: dict[str, Any] = field(default_factory=dict)


Fault = Callable[[Run], Awaitable[None]]


async def kill_service(run: Run, name: str) -> None:
    service = run.stack.services[name]
    await asyncio.to_thread(service.kill)
    await asyncio.sleep(1)
    run.repaired_at = time.time()
    service.start()


async def kill_contacts(run: Run) -> None:
    await kill_service(run, "contacts")


async def kill_ingest(run: Run) -> None:
    await kill_service(run, "ingest")


async def kill_kafka(run: Run) -> None:
    await asyncio.to_thread(run.stack.kill_kafka)
    await asyncio.sleep(2)
    run.repaired_at = time.time()
    await asyncio.to_thread(run.stack.restart_kafka)
    run.notes["broker_answers_after_s"] = round(time.time() - run.repaired_at, 2)


async def crash_postgres(run: Run) -> None:
    await asyncio.to_thread(run.stack.crash_postgres)
    await asyncio.sleep(3)
    run.repaired_at = time.time()
    await asyncio.to_thread(run.stack.restart_postgres)
    run.notes["postgres_answers_after_s"] = round(time.time() - run.repaired_at, 2)


async def poison(run: Run) -> None:
    """A message no consumer can read, on every topic contacts consumes."""
    bus = kafka_bus(run.stack)
    await bus.start()
    try:
        await bus.wait_connected(60)
        for topic in CONSUMED:
            value = f'{{"poison": "{run.workspace}"'.encode()  # not even JSON
            await bus.send_raw(run.stack.prefix + topic, run.workspace, value, {})
    finally:
        await bus.stop()
    run.repaired_at = time.time()


async def duplicates(run: Run) -> None:
    """The same submission posted twice at the same instant, through the form and through the
    API with one Idempotency-Key, twenty times each."""
    load = run.load
    pairs = []
    for i in range(20):
        form_email = load.email(1_000_000 + i)
        api_email = load.email(2_000_000 + i)
        key = uuid.uuid4().hex
        pairs += [load.send(form_email, "form"), load.send(form_email, "form")]
        pairs += [load.send(api_email, "api", key), load.send(api_email, "api", key)]
    await asyncio.gather(*pairs)
    run.repaired_at = time.time()


SCENARIOS: dict[str, Fault] = {
    "duplicates": duplicates,
    "poison": poison,
    "crash_postgres": crash_postgres,
    "kill_contacts": kill_contacts,
    "kill_ingest": kill_ingest,
    "kill_kafka": kill_kafka,
}


# --------------------------------------------------------------------------- reconciliation


def kafka_bus(stack: FaultStack) -> KafkaBus:
    return KafkaBus(stack.kafka.bootstrap, prefix=stack.prefix, topics=[])


async def dlq_sizes(stack: FaultStack) -> dict[str, int]:
    """How many dead letters each consumed topic's DLQ holds."""
    bus = kafka_bus(stack)
    await bus.start()
    try:
        async with asyncio.timeout(120):
            await bus.wait_connected(60)
            return {t: len(await bus.dead_letters(t)) for t in CONSUMED}
    finally:
        await bus.stop()


async def dead_letters_of(stack: FaultStack, key: str) -> dict[str, list[dict[str, str]]]:
    """The headers of the dead letters with this key, per consumed topic."""
    bus = kafka_bus(stack)
    await bus.start()
    try:
        await bus.wait_connected(60)
        return {t: [r.headers for r in await bus.dead_letters(t) if r.key == key] for t in CONSUMED}
    finally:
        await bus.stop()


async def contacts_of(stack: FaultStack, workspace: str) -> dict[str, tuple[int, float]]:
    """email → (how many contacts have it, when the first was created)."""
    url = stack.postgres.url.replace("+asyncpg", "")
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            f"SELECT email, count(*) AS n, min(created_at) AS first "
            f'FROM "{stack.schema_prefix}_contacts".contacts WHERE workspace = $1 GROUP BY email',
            workspace,
        )
    finally:
        await conn.close()
    return {r["email"]: (r["n"], r["first"].timestamp()) for r in rows}


async def wait_ready(stack: FaultStack) -> None:
    for service in stack.services.values():
        await asyncio.to_thread(service.wait_ready)


async def replay(stack: FaultStack, topic: str) -> None:
    env = stack.env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "dlq",
        "replay",
        topic,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


@asynccontextmanager
async def stage(
    stack: FaultStack, what: str, seconds: float, notes: dict[str, Any]
) -> AsyncIterator[None]:
    """A step of a run with its own deadline: its time goes in the run's figures, and a step
    that overruns fails the run saying which step it was, with the services' last log lines."""
    started = time.monotonic()
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except TimeoutError:
        if deadline.expired():
            message = f"{what}: not done after {seconds} s; {notes}\n{stack.tails()}"
            raise AssertionError(message) from None
        raise
    finally:
        notes[f"{what}_s"] = round(time.monotonic() - started, 2)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them:
    # otherwise a request sent just as the server closes one fails, and counts as a reset.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        yield c


async def start_run(
    stack: FaultStack, client: httpx.AsyncClient, scenario: str, repetition: int
) -> Run:
    workspace = f"{scenario.replace('_', '-')}-{repetition}-{uuid.uuid4().hex[:6]}"
    admin = token(workspace, "admin")
    ingest = stack.services["ingest"].url
    fields = [{"name": "email", "type": "email", "label": "Email", "required": True}]
    form = await client.post(
        f"{ingest}/v1/forms", json={"name": "faults", "fields": fields}, headers=admin
    )
    assert form.status_code == 201, form.text
    load = Load(client, ingest, form.json()["id"], admin, workspace, RATE)
    return Run(stack, scenario, workspace, load)


@pytest.mark.parametrize("repetition", range(1, REPETITIONS + 1))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_every_acknowledged_lead_becomes_exactly_one_contact(
    stack: FaultStack,
    results: list[dict[str, Any]],
    client: httpx.AsyncClient,
    scenario: str,
    repetition: int,
) -> None:
    await reconciled_run(stack, results, client, scenario, repetition)


@pytest.mark.parametrize("repetition", range(1, REPETITIONS + 1))
async def test_a_database_crash_loses_nothing_over_its_unix_socket(
    socket_stack: FaultStack,
    results: list[dict[str, Any]],
    client: httpx.AsyncClient,
    repetition: int,
) -> None:
    """The crashed server leaves no socket file behind until it is back: the services must
    wait that out as they wait out a refused TCP connect (`shared.db.engine`)."""
    await reconciled_run(socket_stack, results, client, "crash_postgres", repetition)


async def reconciled_run(
    stack: FaultStack,
    results: list[dict[str, Any]],
    client: httpx.AsyncClient,
    scenario: str,
    repetition: int,
) -> None:
    """One run of `scenario` under load on `stack`, reconciled (see the module's docstring)."""
    async with stage(stack, "ready_before", 300, {}):
        await wait_ready(stack)
    run_started = time.time()
    # What the previous run on this stack left in the DLQs, read once per run.
    dlq_before = LAST_DEAD_LETTERS.get(stack.prefix) or await dlq_sizes(stack)
    run = await start_run(stack, client, scenario, repetition)
    sending = asyncio.create_task(run.load.run_until_stopped())
    try:
        await asyncio.sleep(FAULT_AT_S)
        async with stage(stack, "fault", 300, run.notes):
            await SCENARIOS[scenario](run)
        async with stage(stack, "ready_again", 300, run.notes):
            await wait_ready(stack)
        await asyncio.sleep(LOAD_AFTER_REPAIR_S)
        run.load.stop()
        async with stage(stack, "last_answers", 120, run.notes):  # each has its own 30 s timeout
            await asyncio.shield(sending)
    finally:
        # A run that failed part-way must not go on sending through the next runs.
        await run.load.abandon(sending)
    load_ended = time.time()

    accepted = run.load.accepted
    found: dict[str, tuple[int, float]] = {}
    while time.time() - load_ended < DRAIN_TIMEOUT_S:
        found = await contacts_of(stack, run.workspace)
        if accepted <= found.keys():
            break
        await asyncio.sleep(0.5)
    drained_s = round(time.time() - load_ended, 2)

    dlq_after = await dlq_sizes(stack)
    LAST_DEAD_LETTERS[stack.prefix] = dlq_after
    new_dead = {t: dlq_after[t] - dlq_before[t] for t in CONSUMED}
    answers = run.load.answers
    server_errors = [a for a in answers if a.status is not None and a.status >= 500]
    unavailable = [a for a in server_errors if a.status == 503 and a.retry_after]
    # End to end after the repair: the first lead sent after it that became a contact.
    after = [
        found[a.email][1]
        for a in answers
        if a.sent_at >= run.repaired_at and a.email in found and a.email in accepted
    ]
    figures = {
        "scenario": scenario if not stack.socket else f"{scenario} (socket)",
        "run": repetition,
        "accepted": len(accepted),
        "contacts": len(accepted & found.keys()),
        "missing": len(accepted - found.keys()),
        "duplicates": sum(1 for email in accepted if found.get(email, (0, 0))[0] > 1),
        "5xx": len(server_errors) - len(unavailable),
        "503": len(unavailable),
        # No HTTP answer: refused or reset (a killed ingest), or timed out (a starved one).
        "resets": sum(1 for a in answers if a.error in RESETS),
        "timeouts": sum(1 for a in answers if a.status is None and a.error not in RESETS),
        "dlq_new": sum(new_dead.values()),
        "recovered_s": round(min(after) - run.repaired_at, 2) if after else None,
        "drained_s": drained_s,
        "statuses": dict(run.load.statuses()),
        **run.notes,
    }

    if scenario == "poison":
        assert new_dead == dict.fromkeys(CONSUMED, 1), figures
        for topic, parked in (await dead_letters_of(stack, run.workspace)).items():
            assert len(parked) == 1, topic
            assert parked[0]["leadwire-error"].startswith("invalid_envelope"), topic
        # Replayed, each dead letter goes round once more and is parked again; nothing else.
        for topic in CONSUMED:
            await replay(stack, topic)
        deadline = time.time() + 60
        while time.time() < deadline:
            replayed = await dlq_sizes(stack)
            if all(replayed[t] >= 2 * dlq_after[t] for t in CONSUMED):
                break
            await asyncio.sleep(0.5)
        figures["replayed"] = {t: replayed[t] - dlq_after[t] for t in CONSUMED}
        LAST_DEAD_LETTERS[stack.prefix] = replayed
        assert replayed == {t: 2 * dlq_after[t] for t in CONSUMED}, figures
    figures["run_s"] = round(time.time() - run_started, 1)
    results.append(figures)
    print(json.dumps(figures))

    assert figures["missing"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["5xx"] == 0, figures
    assert figures["accepted"] > 0, figures
    if scenario != "kill_ingest":  # a killed process answers nothing; nobody else may reset
        assert figures["resets"] == 0, figures
    if scenario != "poison":  # an outage is waited out, never dead-lettered
        assert figures["dlq_new"] == 0, new_dead
    assert drained_s < DRAIN_TIMEOUT_S, figures
