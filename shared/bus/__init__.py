"""The message bus: one interface, an in-process transport and a Kafka transport."""

from shared.bus.base import OFF_PATH_GATHER_MS, Bus, Consumer, Record, Subscription
from shared.settings import Settings


def make_bus(settings: Settings, client_id: str = "leadwire") -> Bus:
    """The transport the settings choose: `memory` (embedded) or `kafka`."""
    if settings.bus == "kafka":
        from shared.bus.kafka import KafkaBus
        from shared.bus.kafka_security import KafkaSecurity

        password = settings.kafka_sasl_password
        security = KafkaSecurity(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=password.get_secret_value() if password else None,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )
        return KafkaBus(
            settings.kafka_bootstrap,
            security=security,
            prefix=settings.topic_prefix,
            partitions=settings.topic_partitions,
            replication=settings.kafka_replication_factor,
            min_insync_replicas=settings.kafka_min_insync_replicas,
            create_topics=settings.kafka_create_topics,
            max_retries=settings.consumer_max_retries,
            backoff_s=settings.consumer_retry_backoff_s,
            max_backoff_s=settings.consumer_max_backoff_s,
            max_batch=settings.consumer_max_batch,
            client_id=client_id,
        )
    from shared.bus.memory import MemoryBus

    return MemoryBus(
        partitions=settings.topic_partitions,
        prefix=settings.topic_prefix,
        max_retries=settings.consumer_max_retries,
        backoff_s=settings.consumer_retry_backoff_s,
        max_backoff_s=settings.consumer_max_backoff_s,
        max_batch=settings.consumer_max_batch,
    )


__all__ = ["OFF_PATH_GATHER_MS", "Bus", "Consumer", "Record", "Subscription", "make_bus"]
