"""Fail when a `domain.py` imports I/O frameworks: domain rules stay pure and fast to test."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FORBIDDEN = ("sqlalchemy", "fastapi", "aiokafka", "starlette", "httpx", "asyncpg", "aiosqlite")


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN or name.endswith((".store", ".settings")):
                found.append(f"{path}:{node.lineno}: domain module imports {name}")
    return found


def main(root: Path) -> int:
    problems = [
        v
        for path in sorted(root.rglob("domain.py"))
        if ".venv" not in path.parts
        for v in violations(path)
    ]
    print("\n".join(problems) or "domain modules are free of I/O imports")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
