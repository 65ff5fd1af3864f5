"""contacts's tables (SQLAlchemy 2 typed ORM); no other service reads them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
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
erasures = erasure_table(Base.metadata)


class Contact(Base):
    """One person. A merged-away contact stays as a stub redirecting to its survivor."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("workspace", "email", name="uq_contacts_workspace_email"),
        UniqueConstraint("workspace", "phone", name="uq_contacts_workspace_phone"),
        Index("ix_contacts_workspace_created", "workspace", "created_at", "id"),
        Index("ix_contacts_workspace_updated", "workspace", "updated_at", "id"),
        Index("ix_contacts_workspace_stage", "workspace", "lifecycle_stage"),
        Index("ix_contacts_workspace_interaction", "workspace", "last_interaction_at"),
        Index("ix_contacts_workspace_owner", "workspace", "owner_id"),
        # Partial: only merged-away stubs are looked up by it (a new contact adds no entry).
        Index(
            "ix_contacts_merged_into",
            "merged_into",
            postgresql_where=text("merged_into IS NOT NULL"),
            sqlite_where=text("merged_into IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    job_title: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str | None] = mapped_column(String(100))
    lifecycle_stage: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[str | None] = mapped_column(String(36))
    subscription_status: Mapped[str] = mapped_column(String(20))
    churn_reason: Mapped[str | None] = mapped_column(String(30))
    churn_reason_text: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_interaction_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    merged_into: Mapped[str | None] = mapped_column(String(36))


class ContactTag(Base):
    __tablename__ = "contact_tags"
    __table_args__ = (Index("ix_contact_tags_workspace_tag", "workspace", "tag", "contact_id"),)

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))


class ContactList(Base):
    """Static list membership (customers, newsletter, webinar attendees)."""

    __tablename__ = "contact_lists"
    __table_args__ = (Index("ix_contact_lists_workspace_list", "workspace", "list", "contact_id"),)

    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    list: Mapped[str] = mapped_column(String(100), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))


class FieldDefinitionRow(Base):
    __tablename__ = "field_definitions"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    label: Mapped[str | None] = mapped_column(String(200))
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    options: Mapped[list[str]] = mapped_column(Json, default=list)
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    max_length: Mapped[int | None] = mapped_column(Integer)
    pattern: Mapped[str | None] = mapped_column(String(500))


class Activity(Base):
    """One entry of a contact's timeline."""

    __tablename__ = "activities"
    __table_args__ = (
        # The timeline is read by contact only: no index by workspace to pay for per row.
        Index("ix_activities_contact", "contact_id", "occurred_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(60))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class LifecycleChangeRow(Base):
    """A lifecycle move with its time, for funnel, time-in-stage and churn reports."""

    __tablename__ = "lifecycle_changes"
    __table_args__ = (
        Index("ix_lifecycle_changes_stage", "workspace", "to_stage", "changed_at"),
        Index("ix_lifecycle_changes_contact", "contact_id", "changed_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str] = mapped_column(String(36))
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    churn_reason: Mapped[str | None] = mapped_column(String(30))
    churn_reason_text: Mapped[str | None] = mapped_column(Text)


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_teams_workspace_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(20))
    last_owner_id: Mapped[str | None] = mapped_column(String(36))


class CaptureAssignment(Base):
    """A workspace's rule that every contact a capture creates gets an owner from `team_id`'s
    rotation, in the capture's own transaction."""

    __tablename__ = "capture_assignments"

    workspace: Mapped[str] = mapped_column(String(63), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Owner(Base):
    """A sales person who can own contacts and be assigned tasks."""

    __tablename__ = "owners"
    __table_args__ = (Index("ix_owners_team", "team_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    team_id: Mapped[str | None] = mapped_column(String(36))
    weight: Mapped[int] = mapped_column(Integer, default=1)
    credit: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_assignee", "workspace", "assignee_id", "status", "due_date"),
        Index("ix_tasks_contact", "contact_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str] = mapped_column(String(36))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    due_date: Mapped[date | None] = mapped_column(Date)
    assignee_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Segment(Base):
    """A saved view: a filter in the JSON filter language, with its current members."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_workspace", "workspace"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    filter: Mapped[dict[str, Any]] = mapped_column(Json)
    time_based: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SegmentMember(Base):
    __tablename__ = "segment_members"
    __table_args__ = (Index("ix_segment_members_contact", "contact_id"),)

    segment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MergeRecord(Base):
    """Merge history: which contact was folded into which, with the values chosen."""

    __tablename__ = "merges"
    __table_args__ = (Index("ix_merges_survivor", "survivor_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    survivor_id: Mapped[str] = mapped_column(String(36))
    merged_id: Mapped[str] = mapped_column(String(36))
    chosen: Mapped[dict[str, Any]] = mapped_column(Json)
    merged_at: Mapped[datetime] = mapped_column(UtcDateTime)
