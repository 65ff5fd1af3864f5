"""scoring's persistence, composed from its areas' stores (contacts, scores, rules, rfm): the
`Store` protocol the handlers are typed against, and `SqlStore`, its implementation over one
unit of work's session."""

from __future__ import annotations

from typing import Protocol

from services.scoring.contacts.store import Contact, ContactStore, Identity, SetAside, SqlContacts
from services.scoring.rfm.store import CustomerStore, SqlCustomers
from services.scoring.rules.store import Rescore, RuleSetStore, SqlRuleSets
from services.scoring.scores.store import ScoreStore, SqlScores, Timer

__all__ = [
    "Contact",
    "Identity",
    "Outbox",
    "Rescore",
    "SetAside",
    "SqlStore",
    "Store",
    "Timer",
]


class Store(ContactStore, ScoreStore, RuleSetStore, CustomerStore, Protocol):
    """What the handlers need from persistence (implemented by `SqlStore`)."""


class Outbox(Protocol):
    """Where events go: written in the same transaction as the change (the unit of work)."""

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        """An event already encoded to the bytes its envelope gives (the hot paths')."""
        ...


class SqlStore(SqlContacts, SqlScores, SqlRuleSets, SqlCustomers):
    """Queries over one unit of work's session, on PostgreSQL or SQLite."""
