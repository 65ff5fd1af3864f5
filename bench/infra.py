"""Where a benchmark's Kafka and PostgreSQL come from: the environment, or throwaway servers."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.report import ROOT


@contextmanager
def infrastructure(durable_postgres: bool = False) -> Iterator[tuple[str, str]]:
    """(kafka bootstrap, postgres url): LEADWIRE_KAFKA_BOOTSTRAP and DATABASE_URL (a
    postgresql URL) when set, otherwise servers started like the test session's, stopped and
    deleted afterwards (a run can leave gigabytes: a million contacts, a Kafka log). A
    PostgreSQL started here is reached over its Unix socket (`postgres_via`); it trades its
    crash safety for speed as the test session's does, unless `durable_postgres`."""
    kafka = os.environ.get("LEADWIRE_KAFKA_BOOTSTRAP", "")
    postgres = os.environ.get("DATABASE_URL", "")
    state = ROOT / ".leadwire" / "bench" / str(os.getpid())
    started: list[Any] = []
    # A benchmark stopped by SIGTERM (`timeout`, Ctrl-C's cousin) still stops its servers:
    # the default handler would end the process without running the `finally` below.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if not kafka or not postgres.startswith("postgresql"):
            from tests.infra import fetch_kafka_jars, start_kafka, start_postgres

            if not kafka:
                broker = start_kafka(state / "kafka", fetch_kafka_jars(ROOT))
                started.append(broker)
                kafka = broker.bootstrap
            if not postgres.startswith("postgresql"):
                # As the test session's (and as the benchmarks were always measured), reached
                # over its Unix socket as a server on the same machine should be.
                server = start_postgres(state / "postgres", durable=durable_postgres)
                started.append(server)
                postgres = server.socket_url
        yield kafka, postgres
    finally:
        for server in reversed(started):
            server.stop(remove_data=True)
        shutil.rmtree(state, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def postgres_via(url: str) -> str:
    """How a postgresql URL reaches its server: "unix socket" when its host is a folder (the
    `host` query parameter or an empty host), else "tcp"."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or ""
    host = host[0] if isinstance(host, tuple) else host
    return "unix socket" if not host or host.startswith("/") else "tcp"


# The settings a lead's durability rests on (deploy/README.md keeps them on in production).
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


async def postgres_durability(engine: AsyncEngine) -> dict[str, str]:
    """The server's `DURABILITY_SETTINGS` as it reports them: figures measured with them off
    are not a durable deployment's."""
    async with engine.connect() as conn:
        query = text("SELECT name, setting FROM pg_settings WHERE name IN :names")
        query = query.bindparams(bindparam("names", expanding=True))
        rows = (await conn.execute(query, {"names": DURABILITY_SETTINGS})).all()
        return {str(name): str(setting) for name, setting in rows}


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


async def drop_topics(kafka: str, prefix: str) -> None:
    """The run's topics go with it, as its schema does: a broker shared by many runs keeps
    files open for every partition of every topic (the shared one ran out of them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    try:
        await admin.start()
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception as exc:  # a cleanup: the figures are kept whatever happens here
        print(f"could not delete the run's topics: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


async def drop_schemas(engine: AsyncEngine, *schemas: str) -> None:
    """The run's tables go with it, as its topics do (a shared server keeps nothing of a
    benchmark, nor its autovacuum work after it); `engine` is disposed."""
    try:
        async with engine.begin() as conn:
            for schema in schemas:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()
