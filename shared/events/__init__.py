"""Event envelope, topic registry and the typed payloads each service publishes."""

from shared.events.envelope import Envelope, EventPayload, new_id

__all__ = ["Envelope", "EventPayload", "new_id"]
