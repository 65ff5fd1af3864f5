"""The container image's recipe (deploy/Dockerfile), read as text: this machine has no container
engine to build it, so what can be checked without one is checked here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
LOCK = (ROOT / "deploy" / "requirements.lock").read_text()


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def pins(text: str) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", text, re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in found}


class TestImageRecipe:
    def test_multi_stage_on_a_base_pinned_by_version(self) -> None:
        stages = [args for op, args in instructions() if op == "FROM"]
        assert len(stages) >= 2
        (default_base,) = [
            args for op, args in instructions() if op == "ARG" and "PYTHON_IMAGE" in args
        ]
        assert re.fullmatch(
            r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", default_base
        )
        assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)

    def test_requirements_installed_only_with_their_hashes(self) -> None:
        runs = " ".join(args for op, args in instructions() if op == "RUN")
        assert "pip install --require-hashes --no-deps -r /tmp/requirements.lock" in runs
        copies = [args for op, args in instructions() if op == "COPY"]
        assert "deploy/requirements.lock /tmp/requirements.lock" in copies

    def test_runs_as_non_root_under_an_init(self) -> None:
        ops = dict(instructions())
        assert ops["USER"] == "10001:10001"
        assert ops["ENTRYPOINT"] == '["tini", "--", "leadwire"]'

    def test_the_image_never_creates_topics(self) -> None:
        env = " ".join(args for op, args in instructions() if op == "ENV")
        assert "LEADWIRE_KAFKA_CREATE_TOPICS=false" in env

    def test_build_context_is_only_what_the_image_copies(self) -> None:
        ignore = (ROOT / ".dockerignore").read_text().split()
        assert ignore[ignore.index("*")] == "*"  # everything is excluded first
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        copied = {
            args.split()[0].rstrip("/")
            for op, args in instructions()
            if op == "COPY" and not args.startswith("--from")
        }
        assert copied == allowed


class TestHashedLock:
    def test_every_pinned_requirement_is_locked_at_the_same_version(self) -> None:
        wanted = pins((ROOT / "requirements.txt").read_text())
        locked = pins(LOCK)
        assert {name: locked.get(name) for name in wanted} == wanted

    def test_every_locked_package_has_a_sha256(self) -> None:
        entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.split("\n", 6)[-1])
        packages = [e for e in entries if "==" in e]
        assert len(packages) == len(pins(LOCK)) > 20
        for entry in packages:
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.split()[0]
