"""workflows's settings: the platform's, plus the engine's knobs (`LEADWIRE_WORKFLOWS_*`)."""

from __future__ import annotations

from shared.settings import Settings


class WorkflowsSettings(Settings):
    # Up to 2,000 contact events polled and handled in one transaction, and published by the
    # relay a round at a time: a batch's ten or so statements (and each one's fixed cost on
    # the server) spread over four times as many events. Measured with 100 enabled workflows
    # (`bench.workflows_bench`): 500 a batch ~1,900 events/s at 0.24 ms CPU each, 2,000 a
    # batch ~2,750/s at 0.21 ms. A batch is what has arrived: at idle it is one event.
    consumer_max_batch: int = 2000
    outbox_batch: int = 2000
    # The workspace time zone that time windows and local times of day use when a workflow
    # names none.
    workflows_timezone: str = "UTC"
    # A failing step is tried this many times in all, 1 s, 2 s, 4 s … apart, then fails the run.
    workflows_max_attempts: int = 3
    workflows_retry_base_s: float = 1.0
    # Timers claimed per transaction, and how many claimers run side by side.
    workflows_timer_batch: int = 1000
    workflows_timer_workers: int = 2
    # Longest sleep of the timer loop: timers another replica scheduled are seen this soon.
    workflows_timer_poll_s: float = 0.5
    # How often the per-workflow run counts in /metrics are refreshed.
    workflows_metrics_interval_s: float = 15.0
