"""ingest's repository: the only module that builds queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import (
    Form,
    IdempotencyKey,
    Submission,
    WebhookMessage,
    WebhookSource,
)
from shared.db import insert_rows
from shared.uow import UnitOfWork

QUARANTINED = ("rejected", "spam")
SUBMISSIONS = Submission.metadata.tables["submissions"]


class KeyTaken(Exception):
    """A concurrent request stored the same idempotency key first."""


class IngestStore:
    """Forms, webhook sources, submissions and idempotency keys, inside one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # forms ------------------------------------------------------------------------------------

    async def add_form(self, form: Form) -> None:
        self.session.add(form)
        await self.session.flush()

    async def form(self, form_id: str, workspace: str | None = None) -> Form | None:
        """A live form by id; with `workspace`, only if it belongs there."""
        query = select(Form).where(Form.id == form_id, Form.deleted_at.is_(None))
        if workspace is not None:
            query = query.where(Form.workspace == workspace)
        result: Form | None = await self.session.scalar(query)
        return result

    async def forms(self, workspace: str, limit: int, after: str | None) -> Sequence[Form]:
        query = select(Form).where(Form.workspace == workspace, Form.deleted_at.is_(None))
        if after is not None:
            query = query.where(Form.id > after)
        return (await self.session.scalars(query.order_by(Form.id).limit(limit))).all()

    # webhook sources --------------------------------------------------------------------------

    async def add_webhook_source(self, source: WebhookSource) -> None:
        self.session.add(source)
        await self.session.flush()

    async def webhook_source(
        self, source_id: str, workspace: str | None = None
    ) -> WebhookSource | None:
        query = select(WebhookSource).where(
            WebhookSource.id == source_id, WebhookSource.deleted_at.is_(None)
        )
        if workspace is not None:
            query = query.where(WebhookSource.workspace == workspace)
        result: WebhookSource | None = await self.session.scalar(query)
        return result

    async def webhook_sources(self, workspace: str) -> Sequence[WebhookSource]:
        query = (
            select(WebhookSource)
            .where(WebhookSource.workspace == workspace, WebhookSource.deleted_at.is_(None))
            .order_by(WebhookSource.id)
        )
        return (await self.session.scalars(query)).all()

    async def remember_webhook_message(self, source_id: str, message_id: str, at: datetime) -> bool:
        """Record a webhook-id; False when this source already sent it (a replay)."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert_(WebhookMessage)
            .values(source_id=source_id, message_id=message_id, received_at=at)
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def forget_webhook_messages(self, before: datetime) -> None:
        await self.session.execute(
            delete(WebhookMessage).where(WebhookMessage.received_at < before)
        )

    # submissions ------------------------------------------------------------------------------

    async def add_submissions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert raw submissions with their outcomes (the table, not the mapped class: no ORM
        bulk-insert machinery). The public form route's group commit appends them directly."""
        await insert_rows(self.session, SUBMISSIONS, rows)

    async def submission(self, workspace: str, submission_id: str) -> Submission | None:
        query = select(Submission).where(
            Submission.id == submission_id, Submission.workspace == workspace
        )
        result: Submission | None = await self.session.scalar(query.with_for_update())
        return result

    async def quarantine(
        self,
        workspace: str,
        limit: int,
        reason: str | None = None,
        source: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> Sequence[Submission]:
        """Rejected and spam submissions not yet released, newest first."""
        query = select(Submission).where(
            Submission.workspace == workspace, Submission.status.in_(QUARANTINED)
        )
        if reason is not None:
            query = query.where(Submission.reason == reason)
        if source is not None:
            query = query.where(Submission.source == source)
        if before is not None:
            at, last_id = before
            query = query.where(
                (Submission.created_at < at)
                | ((Submission.created_at == at) & (Submission.id < last_id))
            )
        query = query.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit)
        return (await self.session.scalars(query)).all()

    async def mark_submission(
        self,
        submission_id: str,
        status: str,
        *,
        errors: list[dict[str, str]] | None = None,
        dedupe_key: str | None = None,
        released_at: datetime | None = None,
    ) -> None:
        await self.session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(status=status, errors=errors, dedupe_key=dedupe_key, released_at=released_at)
        )

    # idempotency keys -------------------------------------------------------------------------

    async def idempotency_key(self, workspace: str, key: str) -> IdempotencyKey | None:
        result: IdempotencyKey | None = await self.session.get(IdempotencyKey, (workspace, key))
        return result

    async def save_idempotency_key(self, row: IdempotencyKey) -> None:
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise KeyTaken(row.key) from exc

    async def drop_idempotency_key(self, row: IdempotencyKey) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def forget_idempotency_keys(self, before: datetime) -> None:
        await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))


def store_of(uow: UnitOfWork) -> IngestStore:
    """The repository over a unit of work's session."""
    return IngestStore(uow.session)
