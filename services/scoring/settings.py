"""Settings of the scoring service (`LEADWIRE_SCORING_*` beside the platform's own)."""

from __future__ import annotations

from shared.settings import Settings


class ScoringSettings(Settings):
    """The platform settings plus how often the timer and rescore loops look for work."""

    # Up to 2,000 engagement events polled and scored in one transaction (the poll's dozen or
    # so statements spread over four times as many events), and published a poll at a time.
    consumer_max_batch: int = 2000
    outbox_batch: int = 2000
    # The timer loop sleeps until the earliest timer is due, never longer than this.
    scoring_timer_poll_s: float = 0.5
    scoring_timer_batch: int = 5000
    scoring_timer_claimers: int = 2
    scoring_rescore_poll_s: float = 0.5
    scoring_rescore_chunk: int = 5000


def scoring_settings(settings: Settings) -> ScoringSettings:
    """This service's knobs, also when the app was given plain platform settings."""
    if isinstance(settings, ScoringSettings):
        return settings
    return ScoringSettings()
