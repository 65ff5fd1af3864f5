"""The layer table of STYLE.md, enforced: each role's module imports only what its layer may.

| module | keeps out |
|---|---|
| domain.py | sqlalchemy, fastapi, aiokafka (any I/O library), the store, settings |
| handlers.py | fastapi, aiokafka, sqlalchemy: use cases speak to a store Protocol |
| store.py | fastapi, aiokafka: persistence knows nothing of HTTP or the bus |
| api.py, consumers.py | sqlalchemy and `shared.db`: doors build no queries |

Every module with one of these names under the scanned root is checked, in a service's top
folder and in its area packages alike (`services/contacts/segments/store.py`). Imports under
`if TYPE_CHECKING:` count too: a type from a layer is a dependency on it.

`KNOWN_BREACHES` listed the breaches that existed when this check was widened; they are all
fixed, and a test holds the list empty. An entry that no longer occurs is an error too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

IO_LIBRARIES = ("sqlalchemy", "fastapi", "aiokafka", "starlette", "httpx", "asyncpg", "aiosqlite")

# role (module file name) → (forbidden top-level packages or dotted prefixes, why)
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "domain.py": (IO_LIBRARIES, "domain rules stay free of I/O"),
    "handlers.py": (
        ("fastapi", "starlette", "aiokafka", "sqlalchemy", "asyncpg", "aiosqlite"),
        "handlers speak to a store Protocol, not to HTTP, the bus or the database",
    ),
    "store.py": (
        ("fastapi", "starlette", "aiokafka"),
        "the store knows nothing of HTTP or the bus",
    ),
    "api.py": (
        ("sqlalchemy", "asyncpg", "aiosqlite", "shared.db"),
        "the HTTP door builds no queries: the store does",
    ),
    "consumers.py": (
        ("sqlalchemy", "asyncpg", "aiosqlite", "shared.db"),
        "the bus door builds no queries: the store does",
    ),
}

# (path relative to the root, imported module) of tolerated breaches: none are left, and a
# test holds it empty.
KNOWN_BREACHES: frozenset[tuple[str, str]] = frozenset()


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module an import statement names (`from a.b import c` → a.b, a.b.c)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def forbidden(role: str, module: str) -> str | None:
    """The forbidden layer `module` belongs to, for a module of this role; None if allowed."""
    prefixes, _ = RULES[role]
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    # The domain also keeps out its service's store and settings.
    if role == "domain.py" and module.split(".")[-1] in ("store", "settings"):
        return module
    return None


def breaches(path: Path, root: Path) -> list[tuple[str, int, str]]:
    """(relative path, line, forbidden layer) of each forbidden import in one module; an
    import naming a layer several times (`from sqlalchemy import select`) is one breach."""
    if path.name not in RULES:
        return []
    relative = path.relative_to(root).as_posix()
    found: dict[str, int] = {}
    for line, module in imported_modules(ast.parse(path.read_text(), filename=str(path))):
        layer = forbidden(path.name, module)
        if layer is not None:
            found.setdefault(layer, line)
    return [(relative, line, layer) for layer, line in found.items()]


def check(root: Path, known: frozenset[tuple[str, str]] = KNOWN_BREACHES) -> list[str]:
    """The problems under `root`: new breaches, and allow-listed ones that are gone."""
    problems, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        if {".venv", ".cache", "migrations", "tests"} & set(path.relative_to(root).parts):
            continue
        for relative, line, module in breaches(path, root):
            seen.add((relative, module))
            if (relative, module) not in known:
                _, why = RULES[path.name]
                problems.append(f"{relative}:{line}: {path.name} imports {module} ({why})")
    for relative, module in sorted(known - seen):
        problems.append(f"{relative}: no longer imports {module}: remove it from KNOWN_BREACHES")
    return problems


def main(root: Path) -> int:
    problems = check(root)
    print("\n".join(problems) or "every module keeps to its layer")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
