"""Alembic environment of the notifier service."""

from alembic import context

from services.notifier.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
