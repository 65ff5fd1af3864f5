"""Session-wide real infrastructure: one Kafka broker and one PostgreSQL server per test run.

Both start on first use and stop at the end; set LEADWIRE_KAFKA_BOOTSTRAP or DATABASE_URL
(a postgresql+asyncpg URL) to use servers you already run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.registry import SERVICES
from shared.clock import TEST_CLOCK_FILE, move_test_clock, moved_clock_offset
from tests.helpers import SECRET, eventually
from tests.infra import (
    KafkaServer,
    PostgresServer,
    fetch_kafka_jars,
    free_port,
    start_kafka,
    start_postgres,
)

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".leadwire" / "test-infra" / str(os.getpid())


def unique(prefix: str = "t") -> str:
    """A short random name, so tests sharing one broker and one database never collide."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer | None]:
    """The session's broker; None when LEADWIRE_KAFKA_BOOTSTRAP names one run elsewhere."""
    if os.environ.get("LEADWIRE_KAFKA_BOOTSTRAP"):
        yield None
        return
    server = start_kafka(STATE / "kafka", fetch_kafka_jars(ROOT))
    try:
        yield server
    finally:
        server.stop(remove_data=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer | None) -> str:
    return kafka_server.bootstrap if kafka_server else os.environ["LEADWIRE_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(kafka_server: KafkaServer | None) -> str:
    """The session broker's SASL/PLAIN listener (user KAFKA_SASL_USER)."""
    if kafka_server is None or kafka_server.sasl_bootstrap is None:
        pytest.skip("the broker named by LEADWIRE_KAFKA_BOOTSTRAP has no known SASL listener")
    bootstrap: str = kafka_server.sasl_bootstrap
    return bootstrap


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    """The session's PostgreSQL server; None when DATABASE_URL names one run elsewhere."""
    if os.environ.get("DATABASE_URL", "").startswith("postgresql"):
        yield None
        return
    # The session's cluster is throwaway: it trades crash safety for speed (see
    # FAST_UNSAFE_SETTINGS). The fault suite starts durable servers of its own.
    server = start_postgres(STATE / "postgres", durable=False)
    try:
        yield server
    finally:
        server.stop(remove_data=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer | None) -> str:
    return str(postgres_server.url) if postgres_server else os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def postgres_socket_url(postgres_server: PostgresServer | None) -> str:
    """The session server's database over its Unix socket."""
    if postgres_server is None:
        pytest.skip("the server named by DATABASE_URL has no known Unix socket")
    return str(postgres_server.socket_url)


@dataclass(frozen=True)
class Processes:
    """The five services running as processes: their ports and the topic prefix they use."""

    ports: dict[str, int]
    prefix: str
    kafka_bootstrap: str
    # The processes' business time is the system clock moved by the offset in this file.
    clock_file: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def now(self) -> datetime:
        """The time the processes read now (the system clock plus the moves so far)."""
        return datetime.now(UTC) + moved_clock_offset(self.clock_file)

    async def wait_ready(self, timeout: float = 300) -> None:
        """Until every process answers /readyz with 200 (six processes booting on a busy
        machine can take minutes)."""
        async with httpx.AsyncClient(timeout=10) as client:

            async def all_ready() -> bool:
                for name in self.ports:
                    try:
                        response = await client.get(f"{self.url(name)}/readyz")
                    except httpx.TransportError:
                        return False
                    if response.status_code != 200:
                        return False
                return True

            await eventually(all_ready, timeout=timeout)

    def move_clock(self, by: timedelta) -> None:
        """Move every process's clock forward (seen within 50 ms): time-driven automations are
        tested across the real processes without waiting. The move lasts for the session."""
        move_test_clock(self.clock_file, by)


@pytest.fixture(scope="session")
def distributed_processes(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processes]:
    """The five services as separate processes on real Kafka and PostgreSQL."""
    prefix = unique("boot") + "."
    ports = {name: free_port() for name in SERVICES}
    clock_file = tmp_path_factory.mktemp("clock") / "offset"
    env = os.environ | {
        TEST_CLOCK_FILE: str(clock_file),
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LEADWIRE_TOPIC_PREFIX": prefix,
        "DATABASE_URL": postgres_url,
        "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        # The tests' Slack, webhook and SMTP stand-ins listen on loopback: the operator allows it.
        "LEADWIRE_NOTIFIER_ALLOWED_HOSTS": '["127.0.0.1"]',
        # Links in messages point at these processes' own ports.
        "LEADWIRE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{ports['notifier']}",
        "LEADWIRE_NOTIFIER_TRACKING_URL": f"http://127.0.0.1:{ports['ingest']}",
        "LEADWIRE_NOTIFIER_CONTACT_URL": (
            f"http://127.0.0.1:{ports['contacts']}/v1/contacts/{{contact_id}}"
        ),
    }
    subprocess.run(
        [sys.executable, "-m", "services", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    logs = {name: tmp_path_factory.mktemp("logs") / f"{name}.log" for name in SERVICES}
    children = {
        name: subprocess.Popen(
            [sys.executable, "-m", "services", "serve", name, "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=logs[name].open("wb"),
        )
        for name, port in ports.items()
    }
    try:
        yield Processes(ports, prefix, kafka_bootstrap, clock_file)
    finally:
        for child in children.values():
            child.terminate()
        for name, child in children.items():
            # uvicorn re-raises the SIGTERM it handled, after a graceful shutdown.
            assert child.wait(timeout=30) in (0, -signal.SIGTERM), name
            assert "Application shutdown complete" in logs[name].read_text(), name
