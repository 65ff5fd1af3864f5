"""The contacts repository and unit of work: every query the service runs, composed from each
area's store, handed to the use cases as `tx.store` of a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.contacts.captures.store import CapturesStore
from services.contacts.duplicates.store import DuplicatesStore
from services.contacts.owners.store import OwnersStore
from services.contacts.privacy.store import PrivacyStore
from services.contacts.reports.store import ReportsStore
from services.contacts.segments.store import SegmentsStore
from shared.uow import StoreTransaction, UnitOfWork


class ContactsStore(
    CapturesStore, SegmentsStore, OwnersStore, DuplicatesStore, PrivacyStore, ReportsStore
):
    """Every query the contacts service runs, over the session of one unit of work."""


@asynccontextmanager
async def transaction(uow: UnitOfWork) -> AsyncIterator[StoreTransaction[ContactsStore]]:
    """`async with transaction(ctx.uow()) as tx:` commits on success, rolls back on error; the
    use cases see `tx.store` (this repository) and `tx.emit` (the outbox)."""
    async with uow:
        yield uow.with_store(ContactsStore)


def over(uow: UnitOfWork) -> StoreTransaction[ContactsStore]:
    """An already open unit of work (a consumer's) as the use cases see it."""
    return uow.with_store(ContactsStore)
