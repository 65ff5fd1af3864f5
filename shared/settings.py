"""Settings shared by every service, read from `LEADWIRE_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.db.engine import GENERIC_PLANS, PlanCacheMode

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///{data_dir}/{service}.db"


def write_private(path: Path, text: str) -> None:
    """Write a secret to a file only its owner may read (0600 from the first byte on: the file
    is created with that mode, never readable by others even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    path.chmod(0o600)  # a file that existed before keeps its old mode through os.open


class Settings(BaseSettings):
    """Platform settings; a service may subclass it for its own knobs."""

    model_config = SettingsConfigDict(env_prefix="LEADWIRE_", extra="ignore")

    bus: Literal["memory", "kafka"] = "memory"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # TLS and SASL towards the brokers (see shared.bus.kafka_security).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Prefix for physical topic and group names: lets tests share one broker without collisions.
    topic_prefix: str = ""
    topic_partitions: int = 4
    # Whether a service creates missing topics at start (local runs and tests). Production
    # turns it off (the chart and the image do): topics come from the operator's KafkaTopic
    # resources with the cluster's replication, and a service only reports missing ones.
    kafka_create_topics: bool = True
    kafka_replication_factor: int = 1
    kafka_min_insync_replicas: int | None = None
    # `{service}` and `{data_dir}` are substituted, so one URL serves every service in a process.
    database_url: str = Field(
        default=DEFAULT_SQLITE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "LEADWIRE_DATABASE_URL"),
    )
    # PostgreSQL schema holding a service's tables; `{service}` is substituted.
    db_schema: str = "{service}"
    data_dir: Path = Path(".leadwire")
    migrate_on_start: bool | None = None  # default: only in the embedded (memory bus) mode
    auth_secret: str | None = None
    log_level: str = "INFO"
    log_json: bool = True
    # OTLP/HTTP collector (e.g. http://collector:4318) receiving spans; unset, none are recorded
    # (the standard OTEL_EXPORTER_OTLP_ENDPOINT works too).
    otlp_endpoint: str | None = None
    host: str = "127.0.0.1"
    # Proxies whose X-Forwarded-For/-Proto are believed: comma-separated addresses or CIDR
    # ranges (the ingress controller's), or "*". Empty (the default): none, the peer is the client.
    forwarded_allow_ips: str = ""
    # Base URLs of the other services, by name, for gathering a person's export (contacts):
    # e.g. '{"ingest": "http://leadwire-ingest:8001", …}'; empty: their default local ports.
    service_urls: dict[str, str] = Field(default_factory=dict)
    consumer_max_retries: int = 5
    consumer_retry_backoff_s: float = 0.2
    # The longest wait between two tries while a dependency is down (the backoff doubles up
    # to it): how soon a consumer resumes after its database or broker is back.
    consumer_max_backoff_s: float = 2.0
    consumer_max_batch: int = 500
    outbox_poll_interval_s: float = 0.2
    outbox_batch: int = 500
    # How often a service reports which API keys it saw (their last-used time).
    key_use_report_interval_s: float = 5.0
    # PostgreSQL only: every `interval_s`, ANALYZE the service's tables that at least doubled
    # (and grew by `min_rows`) since their statistics, instead of leaving young tables planned
    # for their old size until autovacuum's next visit (see shared.db.statistics).
    statistics_keeper: bool = True
    statistics_keeper_interval_s: float = 2.0
    statistics_keeper_min_rows: int = 500
    # PostgreSQL only: how prepared statements are planned (see shared.db.engine.create_engine):
    # generic plans, made once per connection, or `auto`, PostgreSQL's own default.
    db_plan_cache_mode: PlanCacheMode = GENERIC_PLANS

    @property
    def embedded(self) -> bool:
        return self.bus == "memory"

    @property
    def should_migrate_on_start(self) -> bool:
        return self.embedded if self.migrate_on_start is None else self.migrate_on_start

    def database_url_for(self, service: str) -> str:
        return self.database_url.format(service=service, data_dir=self.data_dir)

    def schema_for(self, service: str) -> str:
        return self.db_schema.format(service=service)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def resolved_auth_secret(self) -> str:
        """The token-signing secret; embedded mode keeps a generated one under the data dir."""
        if self.auth_secret:
            if len(self.auth_secret) < 32:
                raise ValueError("LEADWIRE_AUTH_SECRET must be at least 32 characters")
            return self.auth_secret
        if not self.embedded:
            raise RuntimeError("LEADWIRE_AUTH_SECRET must be set outside the embedded mode")
        path = self.data_dir / "auth-secret"
        if not path.exists():
            import secrets

            write_private(path, secrets.token_urlsafe(32))
        self.auth_secret = path.read_text().strip()
        return self.auth_secret
