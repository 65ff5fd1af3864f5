"""Pure rules of the reports: churn rate and funnel conversions."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from services.contacts.domain import LIFECYCLE_STAGES


def churn_rate(customers_at_start: int, churned_in_period: int) -> float:
    """Customers churned in the period / customers at its start x 100 (0 with no customers)."""
    if customers_at_start <= 0:
        return 0.0
    return round(churned_in_period / customers_at_start * 100, 2)


def funnel_conversions(entered: Mapping[str, int]) -> list[dict[str, Any]]:
    """Conversion between consecutive stages: contacts reaching the next / reaching this x 100."""
    stages = [s for s in LIFECYCLE_STAGES if s != "churned"]
    rows: list[dict[str, Any]] = []
    for here, nxt in itertools.pairwise(stages):
        base = entered.get(here, 0)
        rate = round(entered.get(nxt, 0) / base * 100, 2) if base else None
        rows.append({"from": here, "to": nxt, "rate": rate})
    return rows
