"""`leadwire` (also `python -m services`): run Leadwire's services and operate them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from services.cli import apply
from services.cli.apply import ApplyError
from services.cli.events import NotOnKafka
from services.demo import DemoSetupFailed, prepare_demo
from services.registry import SERVICES, spec
from shared import db
from shared.app import create_app
from shared.auth import issue_token
from shared.bus import make_bus
from shared.errors import DomainError
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
        # Every service runs on this machine: a message over the server's Unix socket costs
        # its sender less CPU than over loopback TCP.
        "DATABASE_URL": postgres.socket_url,
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
        print(f"Leadwire (distributed) — Kafka {kafka.bootstrap}, PostgreSQL {postgres.socket_url}")
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


EPILOG = """\
examples:
  leadwire run                                 every service in one process (nothing to install)
  leadwire migrate && leadwire serve contacts  production: one service per process
  leadwire workspaces create acme --name "Acme Inc"
  leadwire keys create acme --name website --scopes forms:write,leads:write --ttl-days 365
  leadwire keys revoke acme key_0123456789abcdef
  leadwire apply -f workflow.yaml
  leadwire dlq list                            which topics have dead letters, and why
  leadwire tail leadwire.contacts.v1           events as they happen

Settings come from the environment: LEADWIRE_BUS (memory|kafka), LEADWIRE_KAFKA_BOOTSTRAP,
DATABASE_URL, LEADWIRE_AUTH_SECRET and the other LEADWIRE_* variables (deploy/README.md).
`leadwire COMMAND --help` explains each command.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadwire",
        description="Leadwire: an event-driven CRM automation backend. Run its services, "
        "manage workspaces and API keys, load definitions, inspect events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_p = commands.add_parser("run", help="all services in one process (embedded mode)")
    run_p.add_argument("services", nargs="*", default=list(SERVICES), metavar="SERVICE")
    serve_p = commands.add_parser("serve", help="one service in its own process")
    serve_p.add_argument("service", choices=SERVICES)
    serve_p.add_argument("--port", type=int)
    migrate_p = commands.add_parser("migrate", help="bring services' tables up to date")
    migrate_p.add_argument("services", nargs="*", default=list(SERVICES), metavar="SERVICE")
    commands.add_parser("stack", help="Kafka, PostgreSQL and one process per service, locally")

    ws_p = commands.add_parser("workspaces", help="register and list workspaces (tenants)")
    ws_cmds = ws_p.add_subparsers(dest="action", required=True)
    ws_create = ws_cmds.add_parser("create", help="register a workspace")
    ws_create.add_argument("workspace", help="2-63 lower-case letters, digits or dashes")
    ws_create.add_argument("--name", help="a display name (default: the id)")
    ws_cmds.add_parser("list", help="every registered workspace")

    keys_p = commands.add_parser("keys", help="API keys for integrations: create, list, revoke")
    keys_cmds = keys_p.add_subparsers(dest="action", required=True)
    key_create = keys_cmds.add_parser("create", help="a new key, printed once")
    key_create.add_argument("workspace")
    key_create.add_argument("--name", required=True, help="what uses it, e.g. 'website forms'")
    key_create.add_argument("--scopes", required=True, help="comma-separated, e.g. leads:write")
    expiry = key_create.add_mutually_exclusive_group()
    expiry.add_argument("--ttl-days", type=int, help="stops working after this many days")
    expiry.add_argument("--expires-at", type=datetime.fromisoformat, help="ISO 8601 instant")
    key_list = keys_cmds.add_parser("list", help="a workspace's keys with their last use")
    key_list.add_argument("workspace")
    key_revoke = keys_cmds.add_parser("revoke", help="refused by every service within a second")
    key_revoke.add_argument("workspace")
    key_revoke.add_argument("key_id")

    token_p = commands.add_parser(
        "token", help="an internal signed token (operators, tests; integrations use keys)"
    )
    token_p.add_argument("workspace")
    token_p.add_argument("--scopes", default="admin", help="comma-separated, e.g. contacts:read")
    token_p.add_argument("--ttl-days", type=int)
    old_token_p = commands.add_parser("create-workspace", help="old name of `token`")
    old_token_p.add_argument("workspace")
    old_token_p.add_argument("--scopes", default="admin")
    old_token_p.add_argument("--ttl-days", type=int)

    apply_p = commands.add_parser(
        "apply", help="save forms, scoring rules or workflows from YAML documents"
    )
    apply_p.add_argument("-f", "--file", type=Path, required=True, help="YAML/JSON documents")
    apply_p.add_argument("--workspace", help="for documents that do not name one")
    apply_p.add_argument("--check", action="store_true", help="validate only, save nothing")
    rules_p = commands.add_parser("scoring-rules", help="load a workspace's scoring rules (YAML)")
    rules_p.add_argument("workspace")
    rules_p.add_argument("file", type=Path)
    rules_p.add_argument("--check", action="store_true", help="validate only, save nothing")
    wf_p = commands.add_parser("workflows-apply", help="save a workflow from a JSON/YAML file")
    wf_p.add_argument("workspace")
    wf_p.add_argument("file", type=Path)
    wf_p.add_argument("--enable", action="store_true", help="enable it once saved")
    wf_p.add_argument("--check", action="store_true", help="validate only, save nothing")

    dlq_p = commands.add_parser("dlq", help="dead letters on Kafka: list, show, replay")
    dlq_cmds = dlq_p.add_subparsers(dest="action", required=True)
    dlq_cmds.add_parser("list", help="every topic's dead-letter count and latest error")
    dlq_show = dlq_cmds.add_parser("show", help="a topic's dead letters with their errors")
    dlq_show.add_argument("topic", help="e.g. leadwire.contact-commands.v1")
    dlq_show.add_argument("--json", action="store_true", help="one JSON line each, in full")
    dlq_replay = dlq_cmds.add_parser("replay", help="re-publish them (consumers skip repeats)")
    dlq_replay.add_argument("topic")
    dlq_replay.add_argument("--id", action="append", default=[], help="only this event id")

    tail_p = commands.add_parser("tail", help="print a topic's events as they arrive")
    tail_p.add_argument("topic", help="e.g. leadwire.leads.v1")
    tail_p.add_argument("--from-start", action="store_true", help="from the oldest kept event")
    tail_p.add_argument("-n", "--limit", type=int, help="stop after this many events")
    tail_p.add_argument("--json", action="store_true", help="whole events, one JSON per line")

    ready_p = commands.add_parser("check-ready", help="wait until services answer /readyz 200")
    ready_p.add_argument("urls", nargs="+", help="e.g. http://leadwire-contacts:8002")
    ready_p.add_argument("--timeout", type=float, default=60)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        _dispatch(parser, args, settings)
    except (DomainError, ApplyError, NotOnKafka) as exc:
        parser.exit(2, f"leadwire {args.command}: {getattr(exc, 'message', exc)}\n")


def _dispatch(
    parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings
) -> None:
    from services.cli import access, events

    if args.command == "run":
        if settings.bus != "memory":
            parser.error("`run` is the embedded mode; use `serve` or `stack` with Kafka")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run_embedded(settings, args.services))
    elif args.command == "serve":
        serve(settings, args.service, args.port)
    elif args.command == "migrate":
        asyncio.run(migrate(settings, args.services))
    elif args.command in ("token", "create-workspace"):
        print(create_workspace(settings, args.workspace, args.scopes.split(","), args.ttl_days))
    elif args.command == "stack":
        stack(settings)
    elif args.command == "workspaces" and args.action == "create":
        print(asyncio.run(access.create_workspace(settings, args.workspace, args.name)))
    elif args.command == "workspaces":
        print(asyncio.run(access.list_workspaces(settings)))
    elif args.command == "keys" and args.action == "create":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        made = access.create_key(
            settings, args.workspace, args.name, scopes, args.ttl_days, args.expires_at
        )
        print(asyncio.run(made))
    elif args.command == "keys" and args.action == "list":
        print(asyncio.run(access.list_keys(settings, args.workspace)))
    elif args.command == "keys":
        print(asyncio.run(access.revoke_key(settings, args.workspace, args.key_id)))
    elif args.command == "apply":
        for line in apply.run(settings, args.file, args.workspace, args.check):
            print(line)
    elif args.command == "dlq" and args.action == "list":
        asyncio.run(events.list_dead_letters(settings))
    elif args.command == "dlq" and args.action == "show":
        asyncio.run(events.show_dead_letters(settings, args.topic, args.json))
    elif args.command == "dlq":
        asyncio.run(events.replay_dead_letters(settings, args.topic, args.id))
    elif args.command == "tail":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(events.tail(settings, args.topic, args.from_start, args.limit, args.json))
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
