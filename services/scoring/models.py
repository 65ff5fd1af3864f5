"""scoring's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Json, UtcDateTime, service_metadata
from shared.inbox import inbox_table
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    """This service's declarative base (a class statement, so type checkers see it)."""

    metadata = service_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)


class RuleSetRow(Base):
    """One saved version of a workspace's rule set (versions are never changed)."""

    __tablename__ = "rule_sets"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ContactRow(Base):
    """The contacts projection: attributes for fit rules, email to resolve engagement, and a
    tombstone once erased (so late engagement is set aside, not scored)."""

    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_workspace_email", "workspace", "email"),)

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    attributes: Mapped[dict[str, Any]] = mapped_column(Json)
    erased: Mapped[bool] = mapped_column(Boolean, default=False)


class ScoreRow(Base):
    """A contact's score state: every group, as `ContactScore.to_json()`."""

    __tablename__ = "scores"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(Json)


class LedgerRow(Base):
    """One engagement event of a contact, kept to rescore under new rules."""

    __tablename__ = "ledger"
    __table_args__ = (
        Index("ix_ledger_workspace_contact", "workspace", "contact_id"),
        Index("ix_ledger_workspace_occurred", "workspace", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    workspace: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class TimerRow(Base):
    """A durable timer: a decay-driven threshold crossing of one group (`kind` decay) or a
    customer's next RFM reassessment (`kind` rfm, group empty)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due_at", "due_at"),)

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    group: Mapped[str] = mapped_column(String(63), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RescoreRow(Base):
    """A rescore of a workspace after a new rule-set version, with its progress."""

    __tablename__ = "rescores"
    __table_args__ = (Index("ix_rescores_status", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))  # pending, running, done, superseded
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[str] = mapped_column(String(36), default="")  # last contact id rescored
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RfmRow(Base):
    """A customer's RFM stats and its last assessment."""

    __tablename__ = "rfm"
    __table_args__ = (Index("ix_rfm_workspace_segment", "workspace", "segment"),)

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    first_at: Mapped[float] = mapped_column(Float)
    last_at: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    purchases: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[float] = mapped_column(Float)
    recent_interval_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    r: Mapped[int] = mapped_column(Integer)
    f: Mapped[int] = mapped_column(Integer)
    m: Mapped[int] = mapped_column(Integer)
    segment: Mapped[str] = mapped_column(String(20))
    risk: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(10))


class BreakpointsRow(Base):
    """A workspace's RFM quintile breakpoints, recomputed as purchases and logins arrive."""

    __tablename__ = "rfm_breakpoints"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    recency_days: Mapped[list[float]] = mapped_column(Json)
    frequency: Mapped[list[float]] = mapped_column(Json)
    monetary: Mapped[list[float]] = mapped_column(Json)
    customers: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SetAsideRow(Base):
    """Engagement for a contact this service does not know (yet) or that was erased: kept, not
    scored; applied if the contact appears later."""

    __tablename__ = "set_aside"
    __table_args__ = (
        Index("ix_set_aside_workspace_contact", "workspace", "contact_id"),
        Index("ix_set_aside_workspace_email", "workspace", "email"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    workspace: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    reason: Mapped[str] = mapped_column(String(20))  # unknown_contact, erased_contact
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
