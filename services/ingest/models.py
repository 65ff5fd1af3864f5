"""ingest's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UtcDateTime, service_metadata
from shared.erasure import erasure_table
from shared.inbox import inbox_table
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    """This service's declarative base."""

    metadata = service_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
erasures = erasure_table(Base.metadata)


class Form(Base):
    """A form definition; `definition` holds fields, consent, origins, redirect and honeypot."""

    __tablename__ = "forms"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    signing_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebhookSource(Base):
    """A server-to-server sender: its signing secret and how its payload maps onto a lead."""

    __tablename__ = "webhook_sources"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(String(200))
    mapping: Mapped[dict[str, str]] = mapped_column(JSON)
    default_region: Mapped[str | None] = mapped_column(String(2), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebhookMessage(Base):
    """A `webhook-id` already received from a source, so a replay is refused."""

    __tablename__ = "webhook_messages"

    source_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class Submission(Base):
    """Everything that came in, stored raw with its outcome; rejected and spam are quarantine."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_quarantine", "workspace", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(16))  # form | webhook | api
    source_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # accepted | rejected | spam | released | discarded
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    errors: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    content_type: Mapped[str] = mapped_column(String(200))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[Any] = mapped_column(JSON)  # the parsed input a release re-runs
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    origin: Mapped[str | None] = mapped_column(String(500), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    # `shared.erasure` digests of the e-mail and phone in it (for a quarantined submission, the
    # first ones found in its data), so an erasure finds the person's submissions.
    email_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    phone_digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    correlation_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class IdempotencyKey(Base):
    """A `POST /v1/leads` answered under an Idempotency-Key, kept 24 h to answer it again."""

    __tablename__ = "idempotency_keys"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
