"""Database errors a repository turns into domain errors, so use cases never see SQLAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError


@asynccontextmanager
async def integrity_errors_as(error: Exception) -> AsyncIterator[None]:
    """Raise `error` (a domain error, say `Conflict`) when the block breaks a constraint."""
    try:
        yield
    except IntegrityError as exc:
        raise error from exc
