"""Each service's declarative base, typed.

Write it as a class statement in the service's `models.py`, so type checkers see a class:

    class Base(DeclarativeBase):
        metadata = service_metadata()
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A service's own metadata, with the constraint naming every migration relies on."""
    return MetaData(naming_convention=NAMING)


def new_base() -> type[DeclarativeBase]:
    """A declarative base with its own metadata. Type checkers cannot see a class returned by a
    function, so mapped classes on it need `type: ignore`: prefer the class statement above."""

    class Base(DeclarativeBase):
        metadata = service_metadata()

    return Base
