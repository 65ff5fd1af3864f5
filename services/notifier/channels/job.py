"""What the delivery worker hands a sender: one attempt at one delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from services.notifier.delivery.domain import Outcome


@dataclass(frozen=True)
class Job:
    """One attempt: the delivery, its channel (config and opened secrets) and its message."""

    delivery_id: str
    workspace: str
    channel_id: str | None
    channel_name: str
    kind: str
    purpose: str
    recipient: str | None
    message: dict[str, Any]
    attempt: int
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


class Sender(Protocol):
    """A channel kind's way of sending; never raises for a provider's answer, only returns it."""

    async def send(self, job: Job) -> Outcome: ...
