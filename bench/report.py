"""Where a benchmark's figures go: one JSON file per run under bench/results/, saying which
build it measured."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def build(root: Path = ROOT) -> dict[str, Any]:
    """The commit checked out at `root` and how many tracked files differ from it, results
    aside (0: the figures are that commit's); both None outside a git checkout."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "changed_files": None}
    changed = [line for line in status.splitlines() if "bench/results/" not in line]
    return {"commit": commit, "changed_files": len(changed)}


def save_report(name: str, report: Mapping[str, Any]) -> Path:
    """Write `report`, with its `build`, as bench/results/<name>-<UTC time>.json; its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps({**report, "build": build()}, indent=2) + "\n")
    return path
