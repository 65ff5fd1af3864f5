"""notifier's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
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


class Channel(Base):
    """A place notifications go: a Slack webhook or bot, an SMTP server, a webhook, the log."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("workspace", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(Json)  # never holds a secret
    sealed_secrets: Mapped[str | None] = mapped_column(Text)  # Fernet token of a JSON object
    secret_names: Mapped[list[str]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Template(Base):
    """A message template: subject, HTML, text and Slack blocks, each a sandboxed Jinja2 text."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("workspace", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    blocks: Mapped[list[Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ContactView(Base):
    """notifier's projection of a contact (from `leadwire.contacts.v1` snapshots), for rendering."""

    __tablename__ = "contacts"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkspaceSettings(Base):
    """A workspace's delivery policy: tracking, quiet hours, daily cap, owners' addresses."""

    __tablename__ = "workspace_settings"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Delivery(Base):
    """One requested message and where it stands; the idempotency key is unique per workspace."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("workspace", "idempotency_key"),
        # Only deliveries waiting for a try have a `next_attempt_at`; no index holds a column
        # that recording an outcome changes, so that update is HOT (migration 0006).
        Index(
            "ix_deliveries_next",
            "next_attempt_at",
            postgresql_where=text("next_attempt_at IS NOT NULL"),
            sqlite_where=text("next_attempt_at IS NOT NULL"),
        ),
        Index("ix_deliveries_contact", "workspace", "contact_id", "created_at"),
        # Those waiting for their contact: what a contact's arrival looks up (migration 0007).
        Index(
            "ix_deliveries_waiting",
            "workspace",
            "contact_id",
            postgresql_where=text("NOT prepared"),
            sqlite_where=text("NOT prepared"),
        ),
        Index("ix_deliveries_workspace", "workspace", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    idempotency_key: Mapped[str] = mapped_column(String(300))
    contact_id: Mapped[str | None] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(100))  # as requested: id or name
    kind: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))
    # False while the message waits to be rendered (its contact not yet in the projection).
    prepared: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[dict[str, Any]] = mapped_column(Json)  # rendered content, addresses, ids
    provider_message_id: Mapped[str | None] = mapped_column(String(300))
    correlation_id: Mapped[str | None] = mapped_column(Text)
    # The request's W3C trace context: its outcome events continue the request's trace.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A paced message waiting in a live process's memory for its slot: leased to that process
    # (`held_by`) until `held_until`, with no attempt started; another claims it after that.
    held_by: Mapped[str | None] = mapped_column(String(40))
    held_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    first_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Attempt(Base):
    """One try at a delivery, written before the provider is called and completed after; an
    unfinished one older than the sending lease is a sender that died mid-attempt."""

    __tablename__ = "attempts"
    # The unfinished attempts: how a delivery whose sender died mid-attempt is found.
    __table_args__ = (
        Index(
            "ix_attempts_open",
            "started_at",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
    )

    delivery_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[str | None] = mapped_column(String(20))  # sent, retry, failed, unknown
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)  # the provider's answer, truncated


class Suppression(Base):
    """An address that gets no marketing mail: unsubscribed, bounced or complained.

    Keyed by a keyed hash of the address, never the address itself, so it survives the
    contact's erasure without keeping personal data in the clear.
    """

    __tablename__ = "suppressions"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(20))
    contact_id: Mapped[str | None] = mapped_column(String(64))
    # What the reporter said (a feedback-loop report's id, a bounce text); never the address.
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
