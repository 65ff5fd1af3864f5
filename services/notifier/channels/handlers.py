"""Channel use cases: configure, replace and remove channels; secrets sealed, never returned."""

from __future__ import annotations

from datetime import datetime

from services.notifier.channels.domain import (
    AllowList,
    ConfigProblem,
    check_channel,
)
from services.notifier.channels.secrets import SecretBox
from services.notifier.handlers import (
    ChannelNotFound,
    new_id,
    problems_error,
)
from services.notifier.models import Channel
from services.notifier.schemas import ChannelIn
from services.notifier.store import Store

# ---------------------------------------------------------------------------------------------
# Channels


async def create_channel(
    workspace: str, data: ChannelIn, store: Store, box: SecretBox, allow: AllowList, now: datetime
) -> Channel:
    """A new channel; its configuration is checked and its secrets sealed."""
    if await store.channel(workspace, data.name) is not None:
        raise problems_error(
            [ConfigProblem("name", "taken", f"a channel named {data.name!r} exists")],
            "The channel is invalid.",
        )
    if problems := check_channel(data.kind, data.config, data.secrets, allow):
        raise problems_error(problems, "The channel is invalid; see `errors`.")
    channel = Channel(
        id=new_id("chn"),
        workspace=workspace,
        name=data.name,
        kind=data.kind,
        config=dict(data.config),
        sealed_secrets=box.seal(data.secrets),
        secret_names=sorted(data.secrets),
        created_at=now,
        updated_at=now,
    )
    store.add(channel)
    await store.flush()
    return channel


async def replace_channel(
    workspace: str,
    channel_id: str,
    data: ChannelIn,
    store: Store,
    box: SecretBox,
    allow: AllowList,
    now: datetime,
) -> Channel:
    """Replace a channel's configuration; secrets not given again are kept."""
    channel = await get_channel(workspace, channel_id, store)
    named = await store.channel(workspace, data.name)
    if named is not None and named.id != channel.id:  # else the unique index answers a 500
        raise problems_error(
            [ConfigProblem("name", "taken", f"a channel named {data.name!r} exists")],
            "The channel is invalid.",
        )
    kept = box.open(channel.sealed_secrets) if data.kind == channel.kind else {}
    secrets = kept | data.secrets
    if data.kind == "slack" and data.secrets:  # a new Slack credential replaces the other kind
        secrets = dict(data.secrets)
    if problems := check_channel(data.kind, data.config, secrets, allow):
        raise problems_error(problems, "The channel is invalid; see `errors`.")
    channel.name = data.name
    channel.kind = data.kind
    channel.config = dict(data.config)
    channel.sealed_secrets = box.seal(secrets)
    channel.secret_names = sorted(secrets)
    channel.updated_at = now
    await store.flush()
    return channel


async def get_channel(workspace: str, channel_id: str, store: Store) -> Channel:
    channel = await store.channel(workspace, channel_id)
    if channel is None:
        raise ChannelNotFound(f"channel {channel_id} not found")
    return channel


async def delete_channel(workspace: str, channel_id: str, store: Store) -> None:
    await store.remove(await get_channel(workspace, channel_id, store))
