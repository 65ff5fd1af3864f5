"""Which events travel on which topic: the source of the published JSON Schemas and AsyncAPI."""

from __future__ import annotations

from typing import Any

from shared.events import topics
from shared.events.access import ApiKeyCreated, ApiKeyRevoked, ApiKeyUsed, WorkspaceCreated
from shared.events.contact_commands import COMMAND_TYPES
from shared.events.contacts import CONTACT_EVENT_TYPES
from shared.events.envelope import CLOUDEVENTS_JSON, Envelope, EventPayload
from shared.events.ingest import ENGAGEMENT_TYPES, LeadCaptured
from shared.events.notifications import NOTIFICATION_EVENT_TYPES, REQUEST_TYPES
from shared.events.scores import SCORE_EVENT_TYPES
from shared.events.workflows import RUN_EVENT_TYPES

TOPIC_EVENTS: dict[str, tuple[type[EventPayload], ...]] = {
    topics.LEADS: (LeadCaptured,),
    topics.ENGAGEMENT: tuple(ENGAGEMENT_TYPES.values()),
    topics.CONTACTS: tuple(CONTACT_EVENT_TYPES.values()),
    topics.CONTACT_COMMANDS: tuple(COMMAND_TYPES.values()),
    topics.SCORES: tuple(SCORE_EVENT_TYPES.values()),
    topics.WORKFLOW_RUNS: tuple(RUN_EVENT_TYPES.values()),
    topics.NOTIFICATION_REQUESTS: tuple(REQUEST_TYPES.values()),
    topics.NOTIFICATIONS: tuple(NOTIFICATION_EVENT_TYPES.values()),
    topics.ACCESS: (WorkspaceCreated, ApiKeyCreated, ApiKeyRevoked),
    topics.ACCESS_USAGE: (ApiKeyUsed,),
}


# The Kafka headers of every record: the CloudEvents structured-mode content type, and the W3C
# trace context of the publish (the envelope's `traceparent` is the producer's).
KAFKA_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "content-type": {"type": "string", "const": CLOUDEVENTS_JSON},
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        },
    },
    "required": ["content-type"],
}


def event_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event's `data`, by event type."""
    return {
        cls.event_type: cls.model_json_schema(mode="serialization")
        for events in TOPIC_EVENTS.values()
        for cls in events
    }


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per topic, one message per event type."""
    envelope = Envelope.model_json_schema(mode="serialization")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic, events in TOPIC_EVENTS.items():
        channel_id = topic.replace(".", "_").replace("-", "_")
        channel_messages = {}
        for cls in events:
            message_id = cls.event_type.replace(".", "_")
            messages[message_id] = {
                "name": cls.event_type,
                "summary": (cls.__doc__ or "").strip().splitlines()[0],
                "contentType": CLOUDEVENTS_JSON,
                "headers": {"$ref": "#/components/schemas/KafkaHeaders"},
                "payload": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Envelope"},
                        {
                            "properties": {
                                "type": {"const": cls.event_type},
                                "data": {"$ref": f"./events/{cls.event_type}.json"},
                            }
                        },
                    ]
                },
            }
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        channels[channel_id] = {
            "address": topic,
            "description": f"Keyed by `workspace:contact`; dead letters on `{topics.dlq(topic)}`.",
            "messages": channel_messages,
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Leadwire events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 envelopes with workspace, correlationid and "
            "traceparent extensions, in the structured mode of the CloudEvents Kafka binding: "
            "each record's value is the JSON event and its `content-type` header is "
            f"`{CLOUDEVENTS_JSON}`.",
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"Envelope": envelope, "KafkaHeaders": KAFKA_HEADERS},
            "messages": messages,
        },
    }
