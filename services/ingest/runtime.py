"""What the public endpoints keep between requests in one process: the form cache, the rate
limits, the page templates and the group commit of form posts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from jinja2 import Environment

from services.ingest.domain import TokenBuckets, retry_after
from services.ingest.forms.handlers import (
    FormPost,
    FormSnapshot,
    capture_form_submissions,
    judge_form_submissions,
    load_form,
)
from services.ingest.forms.pages import environment
from services.ingest.handlers import Outcome
from services.ingest.settings import IngestSettings, ingest_settings
from services.ingest.store import GroupCommit, transaction
from shared.app import ServiceContext
from shared.errors import NotFound, TooManyRequests


@dataclass
class Runtime:
    """What the public endpoints keep between requests, one per running service."""

    settings: IngestSettings
    templates: Environment
    writer: GroupCommit[FormPost, Outcome]
    forms: dict[str, tuple[float, FormSnapshot | None]] = field(default_factory=dict)
    # The one read in flight per form: when a cached form expires under load, hundreds of
    # posts miss it at once, and without this each opened its own transaction (past the pool
    # size, a new database connection each) to read the same row.
    loading: dict[str, asyncio.Task[FormSnapshot | None]] = field(default_factory=dict)
    per_client: TokenBuckets = field(init=False)
    per_workspace: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.per_client = TokenBuckets(s.ingest_form_rate_per_s, s.ingest_form_burst)
        self.per_workspace = TokenBuckets(1.0, 1.0)

    async def form(self, ctx: ServiceContext, form_id: str) -> FormSnapshot:
        """A live form, cached briefly: the public endpoint is the hot path."""
        cached = self.forms.get(form_id)
        if cached is not None and cached[0] >= time.monotonic():
            found = cached[1]
        else:
            task = self.loading.get(form_id)
            if task is None:
                task = asyncio.create_task(self._load(ctx, form_id))
                # Its failure is each waiter's to raise; this marks it seen if none is left.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self.loading[form_id] = task
            # Shielded: a client that hangs up does not cancel the read others wait for.
            found = await asyncio.shield(task)
        if found is None:
            raise NotFound(f"no form {form_id}")
        return found

    async def _load(self, ctx: ServiceContext, form_id: str) -> FormSnapshot | None:
        started = time.monotonic()
        try:
            async with transaction(ctx.uow()) as tx:
                found = await load_form(form_id, tx)
        finally:
            mine = self.loading.get(form_id) is asyncio.current_task()
            if mine:
                del self.loading[form_id]
        if mine:  # not forgotten while it ran: what it read may be older than the change
            if len(self.forms) > 10_000:
                self.forms.clear()
            self.forms[form_id] = (started + self.settings.ingest_form_cache_ttl_s, found)
        return found

    def forget_form(self, form_id: str) -> None:
        self.forms.pop(form_id, None)
        self.loading.pop(form_id, None)

    def limit_client(self, form: FormSnapshot, client: str, headers: Mapping[str, str]) -> None:
        wait = self.per_client.take(f"{form.id}|{client}", time.monotonic())
        if wait:
            raise TooManyRequests(
                "Too many submissions from this address; try again later.",
                headers={**headers, "Retry-After": str(retry_after(wait))},
            )

    def admit_workspace(self, workspace: str, headers: Mapping[str, str] | None = None) -> None:
        """The workspace's quota (per minute) over every way in; 0 means unlimited."""
        s = self.settings
        quota = s.ingest_workspace_quotas.get(workspace, s.ingest_workspace_quota_per_minute)
        if quota <= 0:
            return
        wait = self.per_workspace.take(
            workspace, time.monotonic(), rate=quota / 60.0, burst=float(quota)
        )
        if wait:
            raise TooManyRequests(
                "This workspace's ingest quota is spent; try again later.",
                headers={**(headers or {}), "Retry-After": str(retry_after(wait))},
                quota_per_minute=quota,
            )


_runtimes: dict[int, tuple[ServiceContext, Runtime]] = {}


def runtime_of(ctx: ServiceContext) -> Runtime:
    """The runtime of a running service (made on first use, one per context)."""
    found = _runtimes.get(id(ctx))
    if found is not None and found[0] is ctx:
        return found[1]
    writer = GroupCommit(
        ctx.engine, ctx.uow, ctx.relay.notify, judge_form_submissions, capture_form_submissions
    )
    made = Runtime(ingest_settings(ctx.settings), environment(), writer)
    _runtimes[id(ctx)] = (ctx, made)
    return made


def forget(ctx: ServiceContext) -> None:
    """Drop a stopped service's runtime."""
    _runtimes.pop(id(ctx), None)


async def runtime(request: Request) -> Runtime:
    """Async on purpose: a sync dependency costs a thread-pool hop on every request."""
    return runtime_of(request.app.state.ctx)


Runtime_ = Annotated[Runtime, Depends(runtime)]
