"""Leadwire's command line: run, serve, migrate, create-workspace, stack, dlq, scoring-rules,
workflows-apply."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from services.demo import DemoSetupFailed, prepare_demo
from services.registry import SERVICES, spec
from shared import db
from shared.app import create_app
from shared.auth import issue_token
from shared.bus import make_bus
from shared.logs import configure_logging
from shared.migrations import upgrade
from shared.settings import Settings, write_private

ROOT = Path(__file__).resolve().parent.parent
DEV_TOKEN_TTL = timedelta(days=7)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us, so several can share one loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: FastAPI, settings: Settings, port: int) -> uvicorn.Config:
    """uvicorn's settings for one service. Forwarded headers (X-Forwarded-For, -Proto) are
    believed only from the proxies the operator lists in LEADWIRE_FORWARDED_ALLOW_IPS (default:
    none; uvicorn's own default trusts 127.0.0.1, so any local client could choose its address,
    and with it its rate-limit bucket and the recorded `client_address`)."""
    trusted = settings.forwarded_allow_ips.strip()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Idle keep-alive connections are closed after this long. uvicorn's 5 s raced busy
        # clients (a request sent as the server closes the connection fails as a reset), and a
        # load balancer needs its backends to keep connections longer than its own idle
        # timeout (60 s on most), or it answers 502 on the race.
        timeout_keep_alive=75,
    )


async def _serve_all(servers: list[_Server]) -> None:
    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    await asyncio.gather(*(s.serve() for s in servers))


def create_workspace(
    settings: Settings, workspace: str, scopes: list[str], ttl_days: int | None
) -> str:
    ttl = timedelta(days=ttl_days) if ttl_days else None
    return issue_token(settings.resolved_auth_secret(), workspace, scopes, ttl=ttl)


def write_dev_token(settings: Settings) -> Path:
    """An admin token for the `demo` workspace in `<data dir>/dev-token`, owner-only (0600) and
    expiring after DEV_TOKEN_TTL: `run` and `stack` write a fresh one at every start."""
    path = settings.data_dir / "dev-token"
    token = issue_token(settings.resolved_auth_secret(), "demo", ["admin"], ttl=DEV_TOKEN_TTL)
    write_private(path, token + "\n")
    return path


async def run_embedded(settings: Settings, names: list[str]) -> None:
    """All services in one process on the in-process bus and SQLite files."""
    bus = make_bus(settings)
    await bus.start()
    # Each service reads its own settings class (its knobs on top of the shared ones).
    servers = [
        _Server(
            uvicorn_config(
                create_app(spec(n), spec(n).settings_factory(), bus), settings, spec(n).port
            )
        )
        for n in names
    ]
    token_file = write_dev_token(settings)
    print(f"Leadwire (embedded) — admin token for workspace 'demo' in {token_file}")
    for n in names:
        print(f"  {n:<10} http://{settings.host}:{spec(n).port}")
    sys.stdout.flush()
    demo = None
    if set(names) == set(SERVICES):
        urls = {n: f"http://{settings.host}:{spec(n).port}" for n in names}
        demo = asyncio.create_task(_demo_when_up(servers, urls, token_file.read_text().strip()))
    try:
        await _serve_all(servers)
    finally:
        if demo is not None:
            demo.cancel()
        await bus.stop()


async def _demo_when_up(servers: list[_Server], urls: dict[str, str], token: str) -> None:
    """Once every server listens, make what is missing of the demo workspace (services/demo)."""
    while not all(s.started for s in servers):  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.05)
    try:
        lines = await prepare_demo(urls, token)
    except (DemoSetupFailed, httpx.HTTPError) as exc:
        print(f"demo workspace not prepared: {exc}", file=sys.stderr)
        return
    print("\n".join(lines))
    sys.stdout.flush()


async def migrate(settings: Settings, names: list[str]) -> None:
    for name in names:
        service = spec(name)
        engine = db.create_engine(settings.database_url_for(name), schema=settings.schema_for(name))
        try:
            await upgrade(engine, service.migrations, settings.schema_for(name))
        finally:
            await engine.dispose()
        print(f"migrated {name}")


def serve(settings: Settings, name: str, port: int | None) -> None:
    app = create_app(spec(name), spec(name).settings_factory())
    server = uvicorn.Server(uvicorn_config(app, settings, port or spec(name).port))
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it; that is not an error.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def stack(settings: Settings) -> None:
    """The distributed topology on this machine: Kafka, PostgreSQL, one process per service."""
    sys.path.insert(0, str(ROOT / "deploy" / "local"))
    import infra  # type: ignore[import-not-found]  # deploy/local/infra.py: local Kafka and PostgreSQL without Docker

    state = settings.data_dir.resolve() / "local"
    kafka = infra.start_kafka(state / "kafka", infra.fetch_kafka_jars(ROOT))
    postgres = infra.start_postgres(state / "postgres")
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "DATABASE_URL": postgres.url,
        "LEADWIRE_AUTH_SECRET": settings.resolved_auth_secret(),
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([sys.executable, "-m", "services", "migrate"], env=env, check=True)
        for name in SERVICES:
            children.append(
                subprocess.Popen([sys.executable, "-m", "services", "serve", name], env=env)
            )
        write_dev_token(settings)
        print(f"Leadwire (distributed) — Kafka {kafka.bootstrap}, PostgreSQL {postgres.url}")
        for name in SERVICES:
            print(f"  {name:<10} http://{settings.host}:{spec(name).port}")
        print(
            f"admin token for workspace 'demo' in {settings.data_dir / 'dev-token'}; Ctrl-C stops"
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, _interrupt)  # stop the stack on SIGTERM as on Ctrl-C
            for child in children:
                child.wait()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
        postgres.stop()
        kafka.stop()


async def dead_letters(settings: Settings, topic: str, replay: bool) -> None:
    """Print a topic's DLQ (one JSON line per event, with the error); `replay` re-publishes it.

    Replaying is safe: consumers that already applied an event skip it through their inbox.
    """
    from shared.bus.kafka import KafkaBus

    bus = KafkaBus(settings.kafka_bootstrap, prefix=settings.topic_prefix, topics=[])
    await bus.start()
    try:
        await bus.wait_connected(30)
        for record in await bus.dead_letters(topic):
            print(
                json.dumps({"key": record.key, "headers": record.headers, **_shown(record.value)})
            )
            if replay:
                original = record.headers.get("leadwire-original-topic", settings.topic(topic))
                # Back with the headers it was published with (content type, trace context).
                kept = {k: v for k, v in record.headers.items() if not k.startswith("leadwire-")}
                await bus.send_raw(original, record.key, record.value, kept)
    finally:
        await bus.stop()


def _shown(value: bytes) -> dict[str, object]:
    """A dead letter's value for printing: the event as JSON, or, for what is not even JSON (a
    foreign producer's bytes, the usual reason it is there), the raw text."""
    try:
        return {"event": json.loads(value or b"null")}
    except ValueError:
        return {"raw": value.decode(errors="replace")}


def check_ready(urls: list[str], timeout_s: float) -> int:
    """Ask each service's /readyz until all are ready or time runs out (`helm test`)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while True:
        for url in list(pending):
            try:
                response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5)
            except httpx.HTTPError as exc:
                print(f"{url}: {exc}")
                continue
            print(f"{url}: {response.status_code} {response.text}")
            if response.status_code == 200:
                pending.remove(url)
        if not pending or time.monotonic() > deadline:
            return 1 if pending else 0
        time.sleep(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser("run", help="all services in one process (embedded mode)")
    run_p.add_argument("services", nargs="*", default=list(SERVICES))
    serve_p = commands.add_parser("serve", help="one service in its own process")
    serve_p.add_argument("service", choices=SERVICES)
    serve_p.add_argument("--port", type=int)
    migrate_p = commands.add_parser("migrate", help="bring services' tables up to date")
    migrate_p.add_argument("services", nargs="*", default=list(SERVICES))
    ws_p = commands.add_parser("create-workspace", help="create a workspace and print a token")
    ws_p.add_argument("workspace")
    ws_p.add_argument("--scopes", default="admin", help="comma-separated, e.g. contacts:read")
    ws_p.add_argument("--ttl-days", type=int)
    commands.add_parser("stack", help="Kafka, PostgreSQL and one process per service, locally")
    dlq_p = commands.add_parser("dlq", help="inspect (and replay) a topic's dead letters on Kafka")
    dlq_p.add_argument("topic", help="e.g. leadwire.contact-commands.v1")
    dlq_p.add_argument("--replay", action="store_true", help="re-publish them to the topic")
    rules_p = commands.add_parser("scoring-rules", help="load a workspace's scoring rules (YAML)")
    rules_p.add_argument("workspace")
    rules_p.add_argument("file", type=Path)
    rules_p.add_argument("--check", action="store_true", help="validate only, save nothing")
    wf_p = commands.add_parser("workflows-apply", help="save a workflow from a JSON/YAML file")
    wf_p.add_argument("workspace")
    wf_p.add_argument("file", type=Path)
    wf_p.add_argument("--enable", action="store_true", help="enable it once saved")
    wf_p.add_argument("--check", action="store_true", help="validate only, save nothing")
    ready_p = commands.add_parser("check-ready", help="wait until services answer /readyz 200")
    ready_p.add_argument("urls", nargs="+", help="e.g. http://leadwire-contacts:8002")
    ready_p.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if args.command == "run":
        if settings.bus != "memory":
            parser.error("`run` is the embedded mode; use `serve` or `stack` with Kafka")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run_embedded(settings, args.services))
    elif args.command == "serve":
        serve(settings, args.service, args.port)
    elif args.command == "migrate":
        asyncio.run(migrate(settings, args.services))
    elif args.command == "create-workspace":
        print(create_workspace(settings, args.workspace, args.scopes.split(","), args.ttl_days))
    elif args.command == "stack":
        stack(settings)
    elif args.command == "dlq":
        asyncio.run(dead_letters(settings, args.topic, args.replay))
    elif args.command == "scoring-rules":
        from services.scoring import cli

        try:
            print(cli.run(settings, args.workspace, args.file, check_only=args.check))
        except cli.RulesFileError as exc:
            parser.exit(2, f"{exc}\n")
    elif args.command == "workflows-apply":
        from services.workflows import cli as workflows_cli

        try:
            print(workflows_cli.run(settings, args.workspace, args.file, args.enable, args.check))
        except workflows_cli.WorkflowFileError as exc:
            parser.exit(2, f"{exc}\n")
    elif args.command == "check-ready":
        sys.exit(check_ready(args.urls, args.timeout))


if __name__ == "__main__":
    main()
