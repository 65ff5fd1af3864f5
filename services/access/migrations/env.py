"""Alembic environment of the access service."""

from alembic import context

from services.access.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
