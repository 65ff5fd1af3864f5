"""Prometheus metrics every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "leadwire_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "leadwire_http_request_seconds", "HTTP request latency", ["service", "method", "route"]
)
EVENTS_PUBLISHED = Counter("leadwire_events_published_total", "Events published", ["topic"])
EVENTS_CONSUMED = Counter("leadwire_events_consumed_total", "Events handled", ["group"])
EVENTS_DEAD_LETTERED = Counter(
    "leadwire_events_dead_lettered_total", "Events sent to a DLQ", ["group"]
)
HANDLER_SECONDS = Histogram(
    "leadwire_handler_seconds", "Time to handle one polled batch", ["group"]
)
CONSUMER_LAG = Gauge(
    "leadwire_consumer_lag", "Messages behind the end of the partition", ["group", "topic"]
)
OUTBOX_BACKLOG = Gauge("leadwire_outbox_backlog", "Outbox rows not yet published", ["service"])
CONSUMER_WAITING = Gauge(
    "leadwire_consumer_waiting_on_dependency",
    "1 while a consumer holds its events because a dependency (database, broker) is down",
    ["group"],
)
CONSUMER_TRANSIENT_FAILURES = Counter(
    "leadwire_consumer_transient_failures_total",
    "Handler failures caused by an unavailable dependency (retried, never dead-lettered)",
    ["group"],
)
TABLES_ANALYSED = Counter(
    "leadwire_tables_analysed_total",
    "Tables the statistics keeper analysed because they doubled (see shared.db.statistics)",
    ["service", "table"],
)
ANALYZE_SECONDS = Histogram(
    "leadwire_analyze_seconds", "Time of one ANALYZE by the statistics keeper", ["service"]
)
STATISTICS_ROUNDS_FAILED = Counter(
    "leadwire_statistics_rounds_failed_total",
    "Statistics keeper rounds that failed (database unavailable; retried next round)",
    ["service"],
)
