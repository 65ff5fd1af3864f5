"""workflows's settings: the platform's, plus the engine's knobs (`LEADWIRE_WORKFLOWS_*`)."""

from __future__ import annotations

from shared.settings import Settings


class WorkflowsSettings(Settings):
    # Up to 1,000 contact events polled and handled in one transaction: a batch's ten or so
    # statements (and each one's fixed cost on the server) spread over twice as many events as
    # the platform's 500. A batch is what has arrived: at idle it is one event.
    # With 100 enabled workflows (`bench.workflows_bench`) 2,000 a batch handled ~1,800-1,900
    # events/s and 1,000 ~1,740/s. But in the whole stack at 500 leads/s (`bench.speed_to_lead
    # --rates 500 --seconds 30`, a backlog for the whole run) 2,000 took workflows' peak RSS
    # to 189-196 MB (past 200 MB on a slower day) and 1,000 kept it at 167-174 MB, with the
    # same CPU per lead and no slower alerts: several consumers hold a full batch at once.
    consumer_max_batch: int = 1000
    # A run publishes several events (enrolled, each step, its requests, its end): the relay
    # takes up to 2,000 rows a round, so a backlog goes out in few rounds.
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
    # How often the per-workflow run counts in /metrics are refreshed (less often when the
    # read is slow: it then takes at most 1 % of the time, see `consumers.next_count_after`).
    workflows_metrics_interval_s: float = 15.0
