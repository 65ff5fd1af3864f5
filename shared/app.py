"""The service app factory: lifespan-managed engine, bus, consumers, outbox relay and probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send

from shared import db, openapi, tracing
from shared.auth import KeyCache, Principal, authenticate
from shared.bus import Bus, Consumer, Subscription, make_bus
from shared.bus.base import Follower, Record
from shared.db.statistics import keep_statistics
from shared.erasure import checkpoint
from shared.errors import install_error_handlers
from shared.events import topics
from shared.events.access import ApiKeyUsed
from shared.events.contacts import ContactDeleted
from shared.events.envelope import Envelope, source_of
from shared.hot_routes import HotRoute, HotRoutes
from shared.logs import correlation_id_var, event_id_var, workspace_var
from shared.migrations import upgrade
from shared.observability import ObservabilityMiddleware
from shared.outbox import OutboxRelay
from shared.runtime import tune_gc
from shared.settings import Settings
from shared.uow import UnitOfWork

EventHandler = Callable[[Envelope, UnitOfWork], Awaitable[None]]
BatchEventHandler = Callable[[Sequence[Envelope], UnitOfWork], Awaitable[None]]
BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]
log = logging.getLogger(__name__)


def each_in_turn(handle: EventHandler) -> BatchEventHandler:
    """A batch handler calling `handle` for each event in turn, each with its workspace, id
    and correlation id as the work in progress's (logs, traces, events it publishes)."""

    async def handle_each(events: Sequence[Envelope], uow: UnitOfWork) -> None:
        for event in events:
            tokens = (
                workspace_var.set(event.workspace),
                event_id_var.set(event.id),
                correlation_id_var.set(event.correlationid),
            )
            try:
                with tracing.handling_event(event.correlationid):
                    await handle(event, uow)
            finally:
                workspace_var.reset(tokens[0])
                event_id_var.reset(tokens[1])
                correlation_id_var.reset(tokens[2])

    return handle_each


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service: its name, port, tables, routes, consumers and background loops."""

    name: str
    port: int
    metadata: MetaData
    migrations: Path
    routers: Sequence[APIRouter] = ()
    subscriptions: Callable[[ServiceContext], Sequence[Subscription]] = lambda _: ()
    background: Callable[[ServiceContext], Sequence[BackgroundLoop]] = lambda _: ()
    settings_factory: Callable[[], Settings] = Settings
    # Served ahead of the middleware stack (see shared.hot_routes): for a hot path only.
    hot_routes: Sequence[HotRoute] = ()

    @property
    def outbox(self) -> Table:
        return self.metadata.tables["outbox"]

    @property
    def inbox(self) -> Table:
        return self.metadata.tables["inbox"]


@dataclass
class ServiceContext:
    """Everything a running service holds; made in the lifespan, reachable from requests."""

    spec: ServiceSpec
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    relay: OutboxRelay
    consumers: list[Consumer] = field(default_factory=list)
    side_consumers: list[Consumer] = field(default_factory=list)  # not gating readiness
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Every API key's state, following the access topic (see shared.auth).
    keys: KeyCache = field(default_factory=KeyCache)
    keys_follower: Follower | None = None

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.spec.outbox, self.spec.inbox, self.relay.notify)

    def group(self, purpose: str) -> str:
        return f"{self.spec.name}.{purpose}"

    def subscription(
        self,
        purpose: str,
        topics: Sequence[str],
        handle: EventHandler,
        types: Collection[str] | None = None,
        gather_ms: int = 0,
    ) -> Subscription:
        """A consumer group handling each event in turn, one transaction per polled batch;
        `types` limits it to those event types (see `Subscription.types`)."""
        return self.batch_subscription(purpose, topics, each_in_turn(handle), types, gather_ms)

    def batch_subscription(
        self,
        purpose: str,
        topics: Sequence[str],
        handle: BatchEventHandler,
        types: Collection[str] | None = None,
        gather_ms: int = 0,
    ) -> Subscription:
        """A consumer group handing each polled batch, minus events already applied, to
        `handle` in one transaction with one inbox insert (for bulk work such as upserts);
        `types` limits it to those event types (see `Subscription.types`); `gather_ms`, for
        work off a lead's path, lets fetches wait for a larger batch (`OFF_PATH_GATHER_MS`)."""
        group = self.group(purpose)

        async def handler(events: Sequence[Envelope]) -> None:
            todo = first_of_each_id(events)
            try:
                # The inbox is checked at commit, in the outbox's statement: a round trip
                # fewer on every hop, and a redelivery is rare.
                async with self.uow() as uow:
                    uow.claim_at_commit(group, [e.id for e in todo])
                    await handle(todo, uow)
            except Exception:
                # A redelivered event among them (`AlreadyHandled`), or a failure, which an
                # event applied a second time may cause: ask the inbox first, as always.
                async with self.uow() as uow:
                    fresh = await uow.first_times(group, [e.id for e in todo])
                    todo = [e for e in todo if e.id in fresh]
                    if todo:
                        await handle(todo, uow)
            if any(e.type == ContactDeleted.event_type for e in todo):
                # Whatever the service erased, SQLite's write-ahead log keeps no copy of it.
                await checkpoint(self.engine)

        wanted = frozenset(types) if types is not None else None
        return Subscription(group, tuple(topics), handler, types=wanted, gather_ms=gather_ms)


def first_of_each_id(events: Sequence[Envelope]) -> list[Envelope]:
    """The batch in order, without an event delivered twice within it."""
    seen: set[str] = set()
    first = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            first.append(event)
    return first


async def get_context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Context = Annotated[ServiceContext, Depends(get_context)]


async def start_context(spec: ServiceSpec, settings: Settings, bus: Bus | None) -> ServiceContext:
    engine = db.create_engine(
        settings.database_url_for(spec.name),
        schema=settings.schema_for(spec.name),
        plan_cache_mode=settings.db_plan_cache_mode,
    )
    if settings.should_migrate_on_start:
        await upgrade(engine, spec.migrations, settings.schema_for(spec.name))
    the_bus = bus or make_bus(settings, client_id=spec.name)
    if bus is None:
        await the_bus.start()
    relay = OutboxRelay(
        engine,
        spec.outbox,
        the_bus,
        spec.name,
        poll_interval_s=settings.outbox_poll_interval_s,
        batch=settings.outbox_batch,
    )
    ctx = ServiceContext(spec, settings, engine, db.sessionmaker(engine), the_bus, relay)
    relay.start()
    ctx.keys_follower = await the_bus.follow(topics.ACCESS, ctx_key_reader(ctx))
    ctx.tasks.append(asyncio.create_task(report_key_uses(ctx), name=f"{spec.name}:key-uses"))
    for subscription in spec.subscriptions(ctx):
        consumer = await the_bus.subscribe(subscription)
        ctx.consumers.append(consumer)
        if not subscription.gates_readiness:
            ctx.side_consumers.append(consumer)
    for loop in spec.background(ctx):
        ctx.tasks.append(asyncio.create_task(loop(), name=f"{spec.name}:background"))
    if settings.statistics_keeper and engine.dialect.name == "postgresql":
        keeper = keep_statistics(
            engine,
            settings.schema_for(spec.name) or "public",
            spec.name,
            settings.statistics_keeper_interval_s,
            settings.statistics_keeper_min_rows,
        )
        ctx.tasks.append(asyncio.create_task(keeper, name=f"{spec.name}:statistics"))
    return ctx


def ctx_key_reader(ctx: ServiceContext) -> Callable[[Record], Awaitable[None]]:
    async def read(record: Record) -> None:
        try:
            ctx.keys.apply(Envelope.from_bytes(record.value))
        except ValueError:
            log.exception("unreadable event on the access topic", extra={"key": record.key})

    return read


async def report_key_uses(ctx: ServiceContext) -> None:
    """Publish, through the outbox, when API keys were last used here (the access service
    keeps the latest as each key's `last_used_at`)."""
    while True:
        await asyncio.sleep(ctx.settings.key_use_report_interval_s)
        uses = ctx.keys.take_uses()
        if not uses:
            continue
        try:
            async with ctx.uow() as uow:
                for key_id, (workspace, use) in uses.items():
                    used = ApiKeyUsed(
                        key_id=key_id,
                        service=ctx.spec.name,
                        last_used_at=use.last_used_at,
                        requests=use.requests,
                    )
                    envelope = Envelope.of(
                        used, source=source_of(ctx.spec.name), workspace=workspace
                    )
                    uow.emit(topics.ACCESS_USAGE, f"{workspace}:{key_id}", envelope)
        except Exception:  # a database outage loses a last-used time, never a request
            log.warning("could not record API key uses", exc_info=True)


async def stop_context(ctx: ServiceContext, owns_bus: bool) -> None:
    for task in ctx.tasks:
        task.cancel()
    for task in ctx.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await ctx.relay.stop()
    if ctx.keys_follower is not None:
        await ctx.keys_follower.stop()
    for consumer in ctx.consumers:
        await consumer.stop()
    if owns_bus:
        await ctx.bus.stop()
    await ctx.engine.dispose()


def create_app(
    spec: ServiceSpec, settings: Settings | None = None, bus: Bus | None = None
) -> FastAPI:
    """A service's FastAPI app; pass `bus` to share one in-process bus between services."""
    settings = settings or spec.settings_factory()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.auth_secret = settings.resolved_auth_secret()
        # All services of the embedded mode share one process and so one trace resource.
        tracing.configure("leadwire" if settings.embedded else spec.name, settings.otlp_endpoint)
        ctx = await start_context(spec, settings, bus)
        app.state.ctx = ctx
        app.state.api_keys = ctx.keys
        tune_gc()
        try:
            yield
        finally:
            await stop_context(ctx, owns_bus=bus is None)

    # FastAPI's native OpenTelemetry hooks are off: with them on every request pays for
    # provider look-ups (environment reads), and hot routes bypass them anyway. The request
    # span comes from `ObservabilityMiddleware` (and `HotRoutes`); metrics are Prometheus.
    app = ServiceApp(
        title=f"Leadwire {spec.name}",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    openapi.install(app)
    app.add_middleware(ObservabilityMiddleware, service=spec.name)
    app.include_router(probes_router())
    for router in spec.routers:
        app.include_router(router)
    if spec.hot_routes:
        app.hot = HotRoutes(app, spec.hot_routes, spec.name)
    return app


class ServiceApp(FastAPI):
    """A service's FastAPI app: its hot routes, if any, are served ahead of the middleware."""

    hot: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot
        found = hot.find(scope) if hot is not None else None
        if hot is None or found is None:
            await super().__call__(scope, receive, send)
        else:
            await hot.serve(found, scope, receive, send)


def probes_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(ctx: Context) -> JSONResponse:
        """Ready: can do its job now (database reachable, its topics present, every API key
        loaded, consumers in their groups and not waiting out an outage); the bus and the
        outbox backlog are reported, not required."""
        database, bus = await asyncio.gather(db.ping(ctx.engine), ctx.bus.ping())
        missing = ctx.bus.missing_topics()
        keys_loaded = ctx.keys_follower is not None and ctx.keys_follower.caught_up
        checks = {
            "database": database,
            # Missing topics are a deployment fault, not an outage: never ready until fixed.
            "topics": not missing,
            # Until every key is known a valid key would be refused; with the bus down that
            # wait is the outage's, and ingest's public endpoints need no key (see below).
            "api_keys": keys_loaded or not bus,
            "consumers": all(c.ready for c in ctx.consumers if c not in ctx.side_consumers),
            "outbox_relay": ctx.relay.running,
        }
        ready = all(checks.values())
        # A producer-only service (ingest) keeps accepting work into its outbox while the bus
        # is down: that is degraded, not unready, and shows here and in the metrics.
        body: dict[str, object] = {
            "status": "ready" if ready else "not_ready",
            "checks": checks,
            "dependencies": {
                "bus": bus,
                "outbox_backlog": ctx.relay.backlog,
                "api_keys_loaded": keys_loaded,
            },
        }
        if missing:
            body["missing_topics"] = list(missing)
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/v1/whoami")
    async def whoami(principal: Annotated[Principal, Depends(authenticate)]) -> dict[str, object]:
        """Who the presented API key or token is: its workspace and scopes."""
        return {
            "workspace": principal.workspace,
            "scopes": sorted(principal.scopes),
            "subject": principal.subject,
        }

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
