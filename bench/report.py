"""Where a benchmark's figures go: one JSON file per run under bench/results/."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_report(name: str, report: Mapping[str, Any]) -> Path:
    """Write `report` as bench/results/<name>-<UTC time>.json; its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
