"""Alembic environment of the workflows service."""

from alembic import context

from services.workflows.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
