"""The services by name, imported lazily so one service never loads another's code."""

from __future__ import annotations

import importlib

from shared.app import ServiceSpec

SERVICES: tuple[str, ...] = ("ingest", "contacts", "workflows", "notifier", "scoring", "access")


def spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name}.main")
    result: ServiceSpec = module.SPEC
    return result
