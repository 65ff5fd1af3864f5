"""The `leadwire` command line in the embedded mode (SQLite files, as on a laptop): help a
newcomer can read, workspaces and API keys, and `apply -f` for every kind of document."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import SECRET

ROOT = Path(__file__).resolve().parents[2]

DOCUMENTS = """
kind: Form
workspace: acme
spec:
  name: Newsletter
  fields:
    - {name: email, type: email, label: Email, required: true, maps_to: email}
---
kind: ScoringRules
workspace: acme
spec:
  groups: [{name: overall, half_life_days: 14}]
  thresholds: [{name: mql, at: 40, margin: 5}]
  rules:
    - {id: pricing, kind: engagement, event: page.viewed, when: [{field: url, op: contains, value: /pricing}], points: 10}
---
kind: Workflow
workspace: acme
spec:
  name: Welcome drip
  trigger: {type: contact_created}
  steps:
    - {id: tip, type: add_tag, tag: drip-1}
"""


def leadwire(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "LEADWIRE_BUS": "memory",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        "LEADWIRE_DATA_DIR": str(tmp_path),
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "services", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


class TestHelp:
    def test_the_overview_names_every_command_with_examples(self, tmp_path: Path) -> None:
        shown = leadwire(tmp_path, "--help")
        assert shown.returncode == 0
        for command in ("run", "serve", "migrate", "workspaces", "keys", "apply", "dlq", "tail"):
            assert f"    {command} " in shown.stdout, command
        assert "leadwire keys create acme" in shown.stdout
        assert "LEADWIRE_KAFKA_BOOTSTRAP" in shown.stdout

    def test_the_console_script_is_this_command(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert project["project"]["scripts"] == {"leadwire": "services.__main__:main"}


class TestWorkspacesAndKeys:
    def test_a_key_is_shown_once_listed_without_its_secret_and_revoked(
        self, tmp_path: Path
    ) -> None:
        assert leadwire(tmp_path, "workspaces", "create", "acme", "--name", "Acme").returncode == 0
        assert "acme" in leadwire(tmp_path, "workspaces", "list").stdout
        made = leadwire(
            tmp_path,
            "keys",
            "create",
            "acme",
            "--name",
            "site",
            "--scopes",
            "leads:write",
            "--ttl-days",
            "30",
        )
        assert made.returncode == 0, made.stderr
        plaintext = made.stdout.strip().splitlines()[-1]
        assert plaintext.startswith("lw_key_")
        key_id = plaintext.split("_")[1] + "_" + plaintext.split("_")[2]
        listed = leadwire(tmp_path, "keys", "list", "acme")
        assert key_id in listed.stdout
        assert plaintext not in listed.stdout
        revoked = leadwire(tmp_path, "keys", "revoke", "acme", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert f"key {key_id} revoked at" in revoked.stdout

    def test_mistakes_get_a_message_not_a_traceback(self, tmp_path: Path) -> None:
        unknown = leadwire(
            tmp_path, "keys", "create", "nowhere", "--name", "x", "--scopes", "leads:write"
        )
        assert unknown.returncode == 2
        assert "workspace nowhere is not registered" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        leadwire(tmp_path, "workspaces", "create", "acme")
        bad_scope = leadwire(
            tmp_path, "keys", "create", "acme", "--name", "x", "--scopes", "everything"
        )
        assert bad_scope.returncode == 2
        assert "`everything` is not a scope" in bad_scope.stderr


class TestApply:
    def test_every_kind_is_saved_through_its_service(self, tmp_path: Path) -> None:
        path = tmp_path / "acme.yaml"
        path.write_text(DOCUMENTS)
        first = leadwire(tmp_path, "apply", "-f", str(path))
        assert first.returncode == 0, first.stderr
        lines = first.stdout.strip().splitlines()
        assert lines[0].startswith("form frm_")
        assert lines[0].endswith("created for acme")
        assert lines[1].startswith("saved rule set version 1 for acme")
        assert "version 1 (disabled) for acme" in lines[2]
        again = leadwire(tmp_path, "apply", "-f", str(path))
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[0].endswith("updated for acme")
        assert "version 2" in again.stdout.splitlines()[2]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("kind: Dashboard\nworkspace: acme\nspec: {}\n", "unknown kind 'Dashboard'"),
            ("kind: Form\nspec: {}\n", "no workspace"),
            ("kind: Form\nworkspace: acme\nspec: {name: x, fields: []}\n", "the form is invalid"),
            ("kind: [Form\n", "YAML syntax error"),
        ],
    )
    def test_bad_documents_are_refused_with_where_and_why(
        self, tmp_path: Path, text: str, message: str
    ) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        refused = leadwire(tmp_path, "apply", "-f", str(path))
        assert refused.returncode == 2
        assert message in refused.stderr
        assert str(path) in refused.stderr
