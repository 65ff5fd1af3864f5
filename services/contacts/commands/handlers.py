"""Use cases of commands: what other services ask of a contact on
`leadwire.contact-commands.v1`, and the refusal sent back when a command cannot apply."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.handlers import SOURCE, checked, resolve_contact
from services.contacts.owners.handlers import (
    Assignment,
    OwnersRepository,
    assign_owner,
    assign_owners,
    create_task,
)
from services.contacts.people.handlers import PeopleRepository, apply_changes, change_membership
from shared.errors import InvalidInput
from shared.events import topics
from shared.events.contact_commands import (
    AddTag,
    AddToList,
    AssignOwner,
    ContactCommand,
    CreateTask,
    RemoveFromList,
    RemoveTag,
    SetField,
    SetLifecycle,
    SetSubscriptionStatus,
)
from shared.events.contacts import ContactCommandRejected
from shared.events.envelope import Envelope
from shared.logs import correlation_id_var
from shared.uow import Transaction


class CommandsRepository(PeopleRepository, OwnersRepository, Protocol):
    """The repository as commands use it."""

    pass


async def handle_command(
    workspace: str, command: ContactCommand, tx: Transaction[CommandsRepository], now: datetime
) -> None:
    """Apply a command from `leadwire.contact-commands.v1`; an invalid one raises (→ DLQ)."""
    store = tx.store
    if isinstance(command, AssignOwner):  # resolves the contact itself, once
        await assign_owner(
            workspace, command.contact_id, command.owner_id, command.team_id, tx, now, True
        )
        return
    contact = await resolve_contact(store, workspace, command.contact_id)
    cause = command.event_type
    match command:
        case AddTag() | RemoveTag():
            await change_membership(
                workspace,
                contact.id,
                "tags",
                command.tag,
                isinstance(command, AddTag),
                tx,
                now,
                cause,
            )
        case AddToList() | RemoveFromList():
            await change_membership(
                workspace,
                contact.id,
                "lists",
                command.list,
                isinstance(command, AddToList),
                tx,
                now,
                cause,
            )
        case SetField():
            await apply_changes(store, contact, _field_write(command), tx, now, cause)
        case SetLifecycle():
            await apply_changes(
                store,
                contact,
                {
                    "lifecycle_stage": command.stage,
                    "churn_reason": command.churn_reason,
                    "churn_reason_text": command.churn_reason_text,
                },
                tx,
                now,
                cause,
            )
        case SetSubscriptionStatus():
            with checked():
                domain.check_subscription_status(command.status)
            await apply_changes(
                store, contact, {"subscription_status": command.status}, tx, now, cause
            )
        case CreateTask():
            await create_task(
                workspace,
                contact.id,
                command.title,
                command.description,
                command.due_date,
                command.assignee_id,
                tx,
                now,
            )
        case _:
            raise InvalidInput(f"unsupported command {command.event_type}")


@dataclass(frozen=True)
class PolledCommand:
    workspace: str
    command: ContactCommand
    correlationid: str | None = None


async def handle_commands(
    commands: Sequence[PolledCommand], tx: Transaction[CommandsRepository], now: datetime
) -> None:
    """A poll of commands in its order, in one transaction: each run of `assign_owner` of one
    workspace set-based (`assign_owners`: one read of the contacts, one team lock and owners
    read, one timeline insert and segment refresh), every other command in turn."""
    run: list[Assignment] = []
    run_workspace = ""

    async def assign_run() -> None:
        if run:
            await assign_owners(run_workspace, run, tx, now, follow_merges=True)
            run.clear()

    for item in commands:
        command = item.command
        if isinstance(command, AssignOwner):
            if item.workspace != run_workspace:
                await assign_run()
                run_workspace = item.workspace
            run.append(
                Assignment(
                    command.contact_id, command.owner_id, command.team_id, item.correlationid
                )
            )
            continue
        await assign_run()
        token = correlation_id_var.set(item.correlationid or correlation_id_var.get())
        try:
            await handle_command(item.workspace, command, tx, now)
        finally:
            correlation_id_var.reset(token)
    await assign_run()


def command_rejected(envelope: Envelope, error: Exception) -> tuple[str, Envelope]:
    """The key and `contact.command_rejected` event telling a command's sender why it was
    refused; its id follows from the command's, so a repeated refusal is one event."""
    contact_id = envelope.data.get("contact_id")
    rejected = ContactCommandRejected(
        command_id=envelope.id,
        command_type=envelope.type,
        contact_id=contact_id if isinstance(contact_id, str) else None,
        code=getattr(error, "code", "invalid_command"),
        reason=str(error)[:1000],
    )
    out = Envelope.of(
        rejected, source=SOURCE, workspace=envelope.workspace, subject=rejected.contact_id
    )
    out.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rejected:{envelope.id}"))
    out.correlationid = envelope.correlationid
    key = topics.contact_key(envelope.workspace, rejected.contact_id or envelope.id)
    return key, out


def _field_write(command: SetField) -> dict[str, Any]:
    name = command.field
    if name in domain.WRITABLE_CORE_FIELDS or name in ("owner_id", "subscription_status"):
        return {name: command.value}
    if name == "lifecycle_stage":
        return {"lifecycle_stage": command.value}
    custom = name.removeprefix("custom_fields.")
    if custom in domain.RESERVED_FIELD_NAMES:
        raise InvalidInput(
            f"{name} cannot be set by command",
            errors=[{"field": name, "code": "read_only", "message": "not settable"}],
        )
    return {"custom_fields": {custom: command.value}}
