"""`python -m services scoring-rules`: YAML rule files, checked with every error's path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from services.scoring import cli, handlers
from services.scoring.main import SPEC
from services.scoring.store import SqlStore
from shared import db
from shared.uow import UnitOfWork
from tests.helpers import embedded_settings

GOOD = """
groups:
  - name: overall
    half_life_days: 14
thresholds:
  - {name: mql, at: 40, margin: 5}
rules:
  - id: pricing
    kind: engagement
    event: page.viewed
    when: [{field: url, op: contains, value: /pricing}]
    points: 10
  - id: competitor
    kind: negative
    when: [{field: email_domain, op: in, value: [rival.com]}]
    points: -100
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


class TestLoadRules:
    def test_a_syntax_error_names_line_and_column(self, tmp_path: Path) -> None:
        path = write(tmp_path, "rules:\n  - id: x\n    kind: [engagement\n")
        with pytest.raises(cli.RulesFileError, match=r"rules.yaml:4:1: YAML syntax error"):
            cli.check_rules(path)

    def test_invalid_rules_list_every_path(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "groups: [{name: overall, half_life_days: 0}]\n"
            "rules: [{id: x, kind: engagement, event: nope, points: 1}]\n",
        )
        with pytest.raises(cli.RulesFileError) as caught:
            cli.check_rules(path)
        assert "groups.0.half_life_days" in str(caught.value)

    def test_a_valid_file_becomes_the_next_version(self, tmp_path: Path) -> None:
        settings = embedded_settings(tmp_path)
        path = write(tmp_path, GOOD)
        assert "valid" in cli.run(settings, "acme", path, check_only=True)
        assert "version 1" in cli.run(settings, "acme", path)
        assert "version 2" in cli.run(settings, "acme", path)

        async def current() -> int:
            engine = db.create_engine(settings.database_url_for("scoring"))
            try:
                async with UnitOfWork(db.sessionmaker(engine), SPEC.outbox, SPEC.inbox) as uow:
                    rules = await handlers.current_rules(SqlStore(uow.session), "acme")
            finally:
                await engine.dispose()
            assert rules.groups["overall"].half_life_days == 14
            return rules.version

        assert asyncio.run(current()) == 2

    def test_the_command_line_exits_2_with_the_error(self, tmp_path: Path) -> None:
        path = write(tmp_path, "rules: [{id: x, kind: fit, points: 1}]\n")
        done = subprocess.run(
            [sys.executable, "-m", "services", "scoring-rules", "acme", str(path), "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2
        assert "rules.0.when" in done.stderr
