"""Alembic environment of the contacts service."""

from alembic import context

from services.contacts.models import Base
from shared.migrations import run_env

run_env(context, Base.metadata)
