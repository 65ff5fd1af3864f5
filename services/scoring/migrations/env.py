"""Alembic environment of the scoring service."""

from alembic import context

from services.scoring.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
