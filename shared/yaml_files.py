"""The YAML (or JSON) files the command line is handed, read with errors that say where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.errors import InvalidInput


def read_yaml(path: Path, error: type[Exception], every_document: bool = False) -> Any:
    """The file's document (YAML is a superset of JSON), or with `every_document` the list of
    its documents (`---` between them; empty ones left out). Raises `error` naming the file,
    and the line and column of a syntax error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: {exc.strerror}") from None
    try:
        if every_document:
            return [d for d in yaml.safe_load_all(text) if d is not None]
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}: YAML syntax error: {problem}") from None


def invalid_document(where: Path | str, what: str, exc: InvalidInput) -> str:
    """`<where>: the <what> is invalid`, then each of `exc`'s field errors on a line."""
    lines = [f"  {e['field']}: {e['message']}" for e in exc.extra.get("errors", [])]
    return "\n".join([f"{where}: the {what} is invalid", *lines])
