"""The contact events of the capture hot path, built as plain dicts and encoded by orjson.

Every captured lead emits a `contact.created` or `contact.updated`. Building the pydantic
payload, snapshot and envelope models for it and serialising them took about a fifth of a
capture's time. The functions here build the same JSON documents directly from values the
capture already validated: the models' field order, `None` fields left out as
`exclude_none=True` leaves them out (values inside dicts are kept, as pydantic keeps them),
datetimes as pydantic writes them. Tests check the bytes against the models' own encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.events.contacts import ContactCreated, ContactSnapshot, ContactUpdated
from shared.events.envelope import Envelope, PreparedEnvelope

SNAPSHOT_ORDER: tuple[str, ...] = tuple(ContactSnapshot.model_fields)
CREATED = ContactCreated.event_type
UPDATED = ContactUpdated.event_type


def contact_event(
    event_id: str,
    event_type: str,
    source: str,
    workspace: str,
    contact_id: str,
    data: dict[str, Any],
    correlationid: str,
) -> Envelope:
    """The envelope of a contact event, every attribute given (no default factories run)."""
    return PreparedEnvelope.prepare(
        event_type,
        data,
        source=source,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=event_id,
    )


def snapshot_data(
    state: Mapping[str, Any], tags: Iterable[str], lists: Iterable[str]
) -> dict[str, Any]:
    """`ContactSnapshot` of a contact's column values, as `model_dump(exclude_none=True)`."""
    values = {
        **state,
        "custom_fields": state["custom_fields"] or {},
        "tags": sorted(tags),
        "lists": sorted(lists),
    }
    return {name: value for name in SNAPSHOT_ORDER if (value := values[name]) is not None}


def created_data(snapshot: dict[str, Any], cause: str, submission_id: str | None) -> dict[str, Any]:
    """The data of a `contact.created`."""
    data: dict[str, Any] = {"contact": snapshot, "cause": cause}
    if submission_id is not None:
        data["submission_id"] = submission_id
    return data


def updated_data(
    contact_id: str,
    changes: Mapping[str, tuple[Any, Any]],
    snapshot: dict[str, Any],
    cause: str,
    submission_id: str | None,
) -> dict[str, Any]:
    """The data of a `contact.updated`; `changes` maps each changed field to (before, after)."""
    data: dict[str, Any] = {
        "contact_id": contact_id,
        "changes": {name: _change(before, after) for name, (before, after) in changes.items()},
        "contact": snapshot,
        "cause": cause,
    }
    if submission_id is not None:
        data["submission_id"] = submission_id
    return data


def _change(before: Any, after: Any) -> dict[str, Any]:
    """A `FieldChange` without its `None` sides."""
    change = {}
    if before is not None:
        change["before"] = before
    if after is not None:
        change["after"] = after
    return change
