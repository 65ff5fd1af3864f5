"""What the contacts routes of every area share: the scopes they require, and a contact as the
API shows it. Each area's routes are in its `api.py`; `main.py` composes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Query

from services.contacts.handlers import snapshot
from services.contacts.models import Contact
from services.contacts.people.handlers import PeopleRepository, describe_contact
from services.contacts.schemas import ContactPage, ContactRead
from services.contacts.segments.domain import Page
from shared.auth import Principal, require_scope
from shared.uow import Transaction

Reader = Annotated[Principal, Depends(require_scope("contacts:read"))]
Writer = Annotated[Principal, Depends(require_scope("contacts:write"))]
Limit = Annotated[int, Query(ge=1, le=500)]


async def contact_read(contact: Contact, tx: Transaction[PeopleRepository]) -> ContactRead:
    snap = await describe_contact(contact, tx)
    return ContactRead.model_validate(snap.model_dump())


def contact_page(
    page: Page[Contact], tags: Mapping[str, list[str]], lists: Mapping[str, list[str]]
) -> ContactPage:
    """A page of contacts as the API shows them, with their tags and lists."""
    items = [
        ContactRead.model_validate(snapshot(c, tags[c.id], lists[c.id]).model_dump())
        for c in page.items
    ]
    return ContactPage(items=items, next_cursor=page.next_cursor)
