"""workflows's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Json, UtcDateTime, service_metadata
from shared.erasure import erasure_table
from shared.inbox import inbox_table
from shared.outbox import outbox_table


class Base(DeclarativeBase):
    """This service's declarative base (a class statement, so type checkers see it)."""

    metadata = service_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
# A digest per erased contact id, so an old contact event replayed later brings nobody back.
erasures = erasure_table(Base.metadata)


class Workflow(Base):
    """A workflow: its current version and whether it enrolls contacts."""

    __tablename__ = "workflows"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer)
    trigger_type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WorkflowVersion(Base):
    """One saved document of a workflow; runs stay on the version they started on."""

    __tablename__ = "workflow_versions"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Enrollment(Base):
    """A run: one contact going through one version of a workflow."""

    __tablename__ = "enrollments"
    __table_args__ = (
        Index("ix_enrollments_contact", "workspace", "contact_id"),
        Index("ix_enrollments_workflow", "workspace", "workflow_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    workflow_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    contact_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(40))
    step: Mapped[str | None] = mapped_column(String(64))
    outcomes: Mapped[dict[str, str]] = mapped_column(Json)
    seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    wait_event: Mapped[str | None] = mapped_column(String(100))
    wait_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class StepRun(Base):
    """One line of a run's history: a step, when, its outcome and error."""

    __tablename__ = "step_runs"
    __table_args__ = (
        # Found by their run only: a contact's lines (merge, erase, export) through its runs.
        Index("ix_step_runs_enrollment", "enrollment_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    workspace: Mapped[str] = mapped_column(String(63))
    enrollment_id: Mapped[str] = mapped_column(String(40))
    contact_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    step_type: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(60))
    seq: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class Timer(Base):
    """A durable timer: a run's wait, timeout or retry, or a date-relative/inactivity trigger.

    Its id is deterministic (`run:<enrollment>`, `date:<workflow>:<contact>`), so scheduling
    again replaces it instead of adding a second one.
    """

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_due", "due_at"),
        Index("ix_timers_contact", "workspace", "contact_id"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(20))  # `run`, `trigger`
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    contact_id: Mapped[str] = mapped_column(String(64))
    enrollment_id: Mapped[str | None] = mapped_column(String(40))
    workflow_id: Mapped[str | None] = mapped_column(String(40))
    step: Mapped[str | None] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)


class ContactView(Base):
    """workflows's projection of a contact, from `leadwire.contacts.v1`, for conditions and
    rendering: the last snapshot, and the segments the contact is in."""

    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_email", "workspace", "email"),)

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    merged_into: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SentEffect(Base):
    """A contact command a run emitted, so its refusal (which names the command only) finds
    its step. Notification requests leave none: their outcomes carry the idempotency key,
    which names the run and the step."""

    __tablename__ = "sent_effects"
    __table_args__ = (Index("ix_sent_effects_enrollment", "enrollment_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the envelope id
    workspace: Mapped[str] = mapped_column(String(63))
    enrollment_id: Mapped[str] = mapped_column(String(40))
    contact_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Submission(Base):
    """A form submission seen from both sides: the lead (which form) and the contact event
    (which contact). Whichever arrives second fires the form-submitted trigger, once."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_contact", "workspace", "contact_id"),)

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    form_id: Mapped[str | None] = mapped_column(String(64))
    contact_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
