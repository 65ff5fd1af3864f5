"""Kafka clients authenticate with SASL against a real broker; TLS and SASL options check out."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path

import certifi
import pytest

from shared.bus import Subscription, make_bus
from shared.bus.kafka import KafkaBus
from shared.bus.kafka_security import KafkaSecurity
from shared.events.envelope import Envelope
from shared.events.topics import dlq
from shared.settings import Settings
from tests.conftest import unique
from tests.helpers import eventually
from tests.infra import KAFKA_SASL_PASSWORD, KAFKA_SASL_USER

TOPIC = "leadwire.security-test.v1"


class TestOptions:
    def test_plaintext_by_default(self) -> None:
        assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}

    def test_sasl_over_tls_gives_credentials_and_a_verifying_tls_context(self) -> None:
        security = KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="svc",
            sasl_password="pw",
            ssl_cafile=Path(certifi.where()),
        )
        options = security.client_options()
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw")
        context: ssl.SSLContext = options["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname

    def test_sasl_without_credentials_is_refused(self) -> None:
        with pytest.raises(ValueError, match="username and password"):
            KafkaSecurity(protocol="SASL_SSL", sasl_username="svc")

    def test_a_client_certificate_needs_its_key(self) -> None:
        with pytest.raises(ValueError, match="cert and key"):
            KafkaSecurity(protocol="SSL", ssl_certfile=Path(certifi.where()))

    def test_settings_reach_the_bus(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEADWIRE_BUS", "kafka")
        monkeypatch.setenv("LEADWIRE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        monkeypatch.setenv("LEADWIRE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
        monkeypatch.setenv("LEADWIRE_KAFKA_SASL_USERNAME", "svc")
        monkeypatch.setenv("LEADWIRE_KAFKA_SASL_PASSWORD", "secret-pw")
        bus = make_bus(Settings())
        assert isinstance(bus, KafkaBus)
        assert bus.connection["sasl_mechanism"] == "SCRAM-SHA-256"
        assert bus.connection["sasl_plain_password"] == "secret-pw"
        assert "secret-pw" not in repr(Settings())


def sasl_bus(bootstrap: str, prefix: str, password: str) -> KafkaBus:
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_username=KAFKA_SASL_USER, sasl_password=password
    )
    return KafkaBus(bootstrap, prefix=prefix, topics=[TOPIC, dlq(TOPIC)], security=security)


@pytest.mark.kafka
async def test_a_bus_with_sasl_credentials_publishes_and_consumes(
    kafka_sasl_bootstrap: str,
) -> None:
    bus = sasl_bus(kafka_sasl_bootstrap, unique("sasl") + ".", KAFKA_SASL_PASSWORD)
    await bus.start()
    received: list[str] = []

    async def handle(events: Sequence[Envelope]) -> None:
        received.extend(e.id for e in events)

    try:
        await bus.wait_connected(30)
        await bus.subscribe(Subscription(unique("g"), (TOPIC,), handle))
        event = Envelope(source="test", type="test.happened", workspace="w", correlationid="c")
        await bus.publish(TOPIC, "k", event)

        async def arrived() -> bool:
            return received == [event.id]

        await eventually(arrived, timeout=30)
    finally:
        await bus.stop()


@pytest.mark.kafka
async def test_a_wrong_password_never_connects(kafka_sasl_bootstrap: str) -> None:
    bus = sasl_bus(kafka_sasl_bootstrap, unique("sasl") + ".", "not-the-password")
    await bus.start()
    try:
        with pytest.raises(TimeoutError):
            await bus.wait_connected(5)
        assert not await bus.ping()
    finally:
        await bus.stop()
        await asyncio.sleep(0)
