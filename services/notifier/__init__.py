"""notifier: Deliver notifications on Slack, email and webhooks."""
