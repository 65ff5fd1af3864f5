"""The topic registry: every topic Leadwire uses, with its dead-letter twin."""

from __future__ import annotations

LEADS = "leadwire.leads.v1"
ENGAGEMENT = "leadwire.engagement.v1"
CONTACTS = "leadwire.contacts.v1"
CONTACT_COMMANDS = "leadwire.contact-commands.v1"
SCORES = "leadwire.scores.v1"
WORKFLOW_RUNS = "leadwire.workflow-runs.v1"
NOTIFICATION_REQUESTS = "leadwire.notification-requests.v1"
NOTIFICATIONS = "leadwire.notifications.v1"
# Workspaces and API keys, compacted: every replica of every service reads it whole.
ACCESS = "leadwire.access.v1"
ACCESS_USAGE = "leadwire.access-usage.v1"

ALL_TOPICS: tuple[str, ...] = (
    LEADS,
    ENGAGEMENT,
    CONTACTS,
    CONTACT_COMMANDS,
    SCORES,
    WORKFLOW_RUNS,
    NOTIFICATION_REQUESTS,
    NOTIFICATIONS,
    ACCESS,
    ACCESS_USAGE,
)
# Topics whose records are states by key (Kafka keeps the latest per key, forever).
COMPACTED_TOPICS: tuple[str, ...] = (ACCESS,)


def dlq(topic: str) -> str:
    """The dead-letter twin of a topic, where events that kept failing are parked."""
    return f"{topic}.dlq"


def all_topics_with_dlq() -> list[str]:
    return [name for topic in ALL_TOPICS for name in (topic, dlq(topic))]


def contact_key(workspace: str, contact_or_dedupe_key: str) -> str:
    """Partition key: all events of one contact land on one partition, in order."""
    return f"{workspace}:{contact_or_dedupe_key}"
