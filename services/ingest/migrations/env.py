"""Alembic environment of the ingest service."""

from alembic import context

from services.ingest.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
