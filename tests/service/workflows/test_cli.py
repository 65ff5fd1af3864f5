"""`python -m services workflows-apply`: a YAML file becomes a workflow, then its next version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import SECRET

ROOT = Path(__file__).resolve().parents[3]
DRIP = """
name: Welcome drip
trigger: {type: contact_created}
steps:
  - {id: hello, type: send_email, subject: "Hi {{ contact.first_name | default('there') }}", next: wait}
  - {id: wait, type: wait, duration: {days: 2}, next: tip}
  - {id: tip, type: add_tag, tag: drip-2}
"""


def apply(tmp_path: Path, text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "drip.yaml"
    path.write_text(text)
    env = os.environ | {
        "LEADWIRE_BUS": "memory",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        "LEADWIRE_DATA_DIR": str(tmp_path),
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "services", "workflows-apply", "demo", str(path), *flags]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_apply_creates_then_versions_and_refuses_with_paths(tmp_path: Path) -> None:
    first = apply(tmp_path, DRIP, "--enable")
    assert first.returncode == 0, first.stderr
    assert "version 1 (enabled)" in first.stdout
    workflow_id = first.stdout.split()[0]
    second = apply(tmp_path, DRIP.replace("drip-2", "drip-two"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"{workflow_id} version 2 (enabled)")
    bad = apply(tmp_path, DRIP.replace("next: tip", "next: nowhere"))
    assert bad.returncode == 2
    assert "steps[1].next: no step 'nowhere'" in bad.stderr
    syntax = apply(tmp_path, "name: [x\n")
    assert syntax.returncode == 2
    assert "drip.yaml:2:1: YAML syntax error" in syntax.stderr
