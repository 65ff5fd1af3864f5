"""The fault suite's own distributed stack: a Kafka broker and a durable PostgreSQL that the
suite may kill, and ingest and contacts as separate processes it may SIGKILL and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import SECRET
from tests.infra import KafkaServer, PostgresServer, free_port, start_kafka, start_postgres

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "contacts")


@dataclass
class ServiceProcess:
    """One service as a process of its own; `kill()` is SIGKILL, `start()` a fresh process."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services", "serve", self.name, "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def tail(self, lines: int = 20) -> str:
        """The end of this service's log: the suite's state folder is gone once it fails."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return f"{self.name}: no log"
        return f"--- {self.name}, last lines of its log:\n" + "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until /readyz answers 200."""
        started = time.monotonic()
        deadline = started + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited\n{self.tail()}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout} s\n{self.tail()}")


@dataclass
class FaultStack:
    """Servers and service processes of one fault-suite session. `socket`: the services reach
    PostgreSQL over its Unix socket, as `make stack`'s do, not over TCP."""

    state: Path
    kafka_libs: Path
    kafka: KafkaServer
    postgres: PostgresServer
    prefix: str
    socket: bool = False
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @classmethod
    def start(cls, state: Path, kafka_libs: Path, socket: bool = False) -> FaultStack:
        kafka = start_kafka(state / "kafka", kafka_libs)
        postgres = start_postgres(state / "postgres", durable=True)
        prefix = f"faults{uuid.uuid4().hex[:8]}."
        stack = cls(state, kafka_libs, kafka, postgres, prefix, socket)
        env = stack.env()
        subprocess.run(
            [sys.executable, "-m", "services", "migrate", *SERVICES],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        for name in SERVICES:
            stack.services[name] = ServiceProcess(name, free_port(), env, state / f"{name}.log")
            stack.services[name].start()
        for service in stack.services.values():
            service.wait_ready()
        return stack

    @property
    def database_url(self) -> str:
        """PostgreSQL as the services reach it."""
        return str(self.postgres.socket_url if self.socket else self.postgres.url)

    @property
    def schema_prefix(self) -> str:
        return self.prefix.rstrip(".")

    def env(self) -> dict[str, str]:
        return os.environ | {
            "LEADWIRE_BUS": "kafka",
            "LEADWIRE_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "LEADWIRE_TOPIC_PREFIX": self.prefix,
            "DATABASE_URL": self.database_url,
            "LEADWIRE_DB_SCHEMA": f"{self.schema_prefix}_{{service}}",
            "LEADWIRE_AUTH_SECRET": SECRET,
            # The load comes from one address at a rate no real visitor has.
            "LEADWIRE_INGEST_FORM_RATE_PER_S": "100000",
            "LEADWIRE_INGEST_FORM_BURST": "100000",
            "LEADWIRE_LOG_LEVEL": "WARNING",
        }

    def tails(self) -> str:
        return "\n".join(service.tail() for service in self.services.values())

    def kill_kafka(self) -> None:
        self.kafka.kill()

    def restart_kafka(self) -> None:
        self.kafka = start_kafka(self.state / "kafka", self.kafka_libs)

    def crash_postgres(self) -> None:
        self.postgres.crash()

    def restart_postgres(self) -> None:
        self.postgres = start_postgres(self.state / "postgres", durable=True)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        self.postgres.stop(remove_data=True)
        self.kafka.stop(remove_data=True)

    def describe(self) -> dict[str, Any]:
        return {"kafka": self.kafka.bootstrap, "postgres": self.database_url, "prefix": self.prefix}
