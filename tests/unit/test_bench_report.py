"""A benchmark's report names the build it measured: the commit, and whether files differed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.report import build


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_checkout_names_its_commit_and_counts_changed_files(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "old.json").write_text("{}\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    commit = git(tmp_path, "rev-parse", "HEAD")
    assert build(tmp_path) == {"commit": commit, "changed_files": 0}

    (tmp_path / "new.py").write_text("untracked\n")  # not part of the build measured
    (tmp_path / "bench" / "results" / "old.json").write_text('{"moved": 1}\n')  # results
    assert build(tmp_path) == {"commit": commit, "changed_files": 0}

    (tmp_path / "app.py").write_text("x = 2\n")
    assert build(tmp_path) == {"commit": commit, "changed_files": 1}


def test_outside_a_checkout_the_build_is_unknown(tmp_path: Path) -> None:
    assert build(tmp_path) == {"commit": None, "changed_files": None}
