"""Session-wide real infrastructure: one Kafka broker and one PostgreSQL server per test run.

Both start on first use and stop at the end; set LEADWIRE_KAFKA_BOOTSTRAP or DATABASE_URL
(a postgresql+asyncpg URL) to use servers you already run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import fetch_kafka_jars, start_kafka, start_postgres

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".leadwire" / "test-infra" / str(os.getpid())


def unique(prefix: str = "t") -> str:
    """A short random name, so tests sharing one broker and one database never collide."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if bootstrap := os.environ.get("LEADWIRE_KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    server = start_kafka(STATE / "kafka", fetch_kafka_jars(ROOT))
    try:
        yield server.bootstrap
    finally:
        server.stop(remove_data=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        yield url
        return
    server = start_postgres(STATE / "postgres")
    try:
        yield server.url
    finally:
        server.stop(remove_data=True)
