"""Alembic, driven from code: each service keeps its own history under `migrations/`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.locks import xact_lock


def alembic_config(script_location: Path, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


# Alembic's `context` and `op` are process-global proxies: migrations in one process must not
# interleave, which they would when several embedded services start on one event loop.
_in_process = asyncio.Lock()


async def upgrade(engine: AsyncEngine, script_location: Path, schema: str | None) -> None:
    """Bring a service's tables to the newest revision (creating its schema on PostgreSQL)."""
    async with _in_process, engine.begin() as conn:
        if conn.dialect.name == "postgresql" and schema:
            # Serialise concurrent migrators of one service (replicas starting together).
            await xact_lock(conn, schema)
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(
            lambda sync_conn: command.upgrade(alembic_config(script_location, sync_conn), "head")
        )


def run_env(context: Any, metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py`: migrate on the connection we were handed."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `python -m services migrate`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def create_platform_tables() -> None:
    """The outbox and inbox every service has; called from each service's first revision."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )


def create_erasures_table() -> None:
    """The erasure markers of `shared.erasure` (one digest per identity of an erased person)."""
    op.create_table(
        "erasures",
        sa.Column("workspace", sa.String(63), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    )
