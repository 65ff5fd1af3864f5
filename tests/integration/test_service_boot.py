"""Each service boots in both modes; /readyz is 200 when the service can do its job: database
reachable and consumers in their groups (the bus itself is reported, not required)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.registry import SERVICES, spec
from shared.app import create_app
from shared.events.topics import all_topics_with_dlq
from tests.conftest import Processes, unique
from tests.helpers import distributed_settings, embedded_settings, eventually, running
from tests.infra import free_port


@pytest.mark.parametrize("name", SERVICES)
class TestEmbeddedBoot:
    async def test_ready_on_sqlite_and_the_in_process_bus(self, name: str, tmp_path: Path) -> None:
        app = create_app(spec(name), embedded_settings(tmp_path))
        async with running(app) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {
                "database": True,
                "topics": True,
                "api_keys": True,
                "consumers": True,
                "outbox_relay": True,
            }
            assert ready.json()["dependencies"] == {
                "bus": True,
                "outbox_backlog": 0,
                "api_keys_loaded": True,
            }
            metrics = await client.get("/metrics")
            assert "leadwire_http_requests_total" in metrics.text

    async def test_a_plain_correlation_id_is_kept_and_anything_else_replaced(
        self, name: str, tmp_path: Path
    ) -> None:
        app = create_app(spec(name), embedded_settings(tmp_path))
        async with running(app) as client:
            kept = await client.get("/healthz", headers={"X-Correlation-Id": "web-42.a:b"})
            assert kept.headers["x-correlation-id"] == "web-42.a:b"
            odd = await client.get("/healthz", headers={"X-Correlation-Id": "x" * 500})
            assert odd.headers["x-correlation-id"] != "x" * 500
            assert len(odd.headers["x-correlation-id"]) == 36  # a fresh UUID

    async def test_a_consumer_is_not_ready_when_the_bus_is_down_a_producer_only_service_is(
        self, name: str, tmp_path: Path
    ) -> None:
        app = create_app(spec(name), embedded_settings(tmp_path))
        async with running(app) as client:
            await app.state.ctx.bus.stop()
            ready = await client.get("/readyz")
            assert ready.json()["dependencies"]["bus"] is False
            ctx = app.state.ctx
            if any(c not in ctx.side_consumers for c in ctx.consumers):
                assert ready.status_code == 503
                assert ready.json()["checks"]["consumers"] is False
            else:  # ingest keeps taking leads into its outbox (its erasures wait for the bus)
                assert ready.status_code == 200


@pytest.mark.kafka
@pytest.mark.postgres
class TestDistributedBoot:
    async def test_every_service_process_becomes_ready(
        self, distributed_processes: Processes
    ) -> None:
        async with httpx.AsyncClient() as client:
            for name, port in distributed_processes.ports.items():

                async def ready(port: int = port) -> bool:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/readyz")
                    except httpx.TransportError:
                        return False
                    return response.status_code == 200

                await eventually(ready, timeout=90)
                metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert metrics.status_code == 200, name

    async def test_not_ready_when_kafka_is_unreachable(
        self, postgres_url: str, kafka_bootstrap: str
    ) -> None:
        settings = distributed_settings(
            f"127.0.0.1:{free_port()}", postgres_url, unique("nk") + "."
        )
        app = create_app(spec("contacts"), settings)
        async with running(app) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["dependencies"]["bus"] is False
            assert ready.json()["checks"]["consumers"] is False
            assert ready.json()["checks"]["database"] is True

    async def test_ingest_stays_ready_while_kafka_is_unreachable(self, postgres_url: str) -> None:
        settings = distributed_settings(
            f"127.0.0.1:{free_port()}", postgres_url, unique("nk") + "."
        )
        app = create_app(spec("ingest"), settings)
        async with running(app) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["dependencies"]["bus"] is False

    async def test_missing_topics_are_reported_never_created_when_creation_is_off(
        self, postgres_url: str, kafka_bootstrap: str
    ) -> None:
        prefix = unique("nt") + "."
        settings = distributed_settings(
            kafka_bootstrap, postgres_url, prefix, kafka_create_topics=False
        )
        app = create_app(spec("scoring"), settings)
        async with running(app) as client:

            async def topics_checked() -> bool:
                return "missing_topics" in (await client.get("/readyz")).json()

            await eventually(topics_checked)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["topics"] is False
            assert sorted(ready.json()["missing_topics"]) == sorted(
                prefix + t for t in all_topics_with_dlq()
            )
            # What the chart's KafkaTopics do: the operator creates them; the service notices.
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(prefix + t, 2, 1) for t in all_topics_with_dlq()]
                )
            finally:
                await admin.close()

            async def topics_present() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(topics_present)
            assert "missing_topics" not in (await client.get("/readyz")).json()

    async def test_not_ready_when_the_database_is_unreachable(self, kafka_bootstrap: str) -> None:
        dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/leadwire"
        settings = distributed_settings(
            kafka_bootstrap, dead, unique("nd") + ".", migrate_on_start=False
        )
        app = create_app(spec("scoring"), settings)
        async with running(app) as client:

            async def bus_up() -> bool:
                return bool((await client.get("/readyz")).json()["dependencies"]["bus"])

            await eventually(bus_up)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] is False
