"""ingest's own knobs, on top of the platform settings (`LEADWIRE_INGEST_*`)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class IngestSettings(Settings):
    """Body limit, rate limits and quotas of the public ingest endpoints."""

    ingest_max_body_bytes: int = 64 * 1024
    # Per form and client address: a steady rate and the burst a client may spend at once.
    ingest_form_rate_per_s: float = 1.0
    ingest_form_burst: int = 20
    # Per workspace, submissions per minute over forms, webhooks and the API; 0 = unlimited.
    ingest_workspace_quota_per_minute: int = 0
    # Overrides per workspace, e.g. LEADWIRE_INGEST_WORKSPACE_QUOTAS='{"acme": 6000}'.
    ingest_workspace_quotas: dict[str, int] = Field(default_factory=dict)
    # Form definitions are cached this long per process (edits here invalidate at once).
    ingest_form_cache_ttl_s: float = 5.0


def ingest_settings(settings: Settings) -> IngestSettings:
    """The ingest view of whatever settings the app was made with (env fills ingest's knobs)."""
    if isinstance(settings, IngestSettings):
        return settings
    return IngestSettings(**settings.model_dump())
