"""One limit on the shape of JSON a client sends, checked at the door.

Whatever an endpoint acknowledges must survive every later step: the JSON column it is stored
in (orjson refuses documents nested deeper than 255), the event envelope that nests it a few
levels further, and each consumer's parser. So objects and arrays nested more than MAX_DEPTH
levels, and object keys longer than MAX_KEY_LENGTH characters, are refused up front with 422
(`json_too_deep`, `json_key_too_long`) instead of answering 202 and failing in a consumer;
so are integers outside 64 bits (`json_number_too_large`), which orjson cannot write.
Far below every parser's own limit, far above what a form, a CRM webhook or an analytics
event needs.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 32
MAX_KEY_LENGTH = 256
# orjson writes integers from -2**63 to 2**64 - 1; past that a stored document cannot be written.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


class JsonLimitExceeded(ValueError):
    """A document past a limit: `code` says which, `path` where (dotted, "" for the root)."""

    def __init__(self, code: str, message: str, path: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


def check_json(value: Any, max_depth: int = MAX_DEPTH, max_key: int = MAX_KEY_LENGTH) -> None:
    """Raise JsonLimitExceeded for the first place `value` (parsed JSON) breaks a limit.

    Iterative, so a document nested thousands deep costs no Python recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            children = node.items()
        elif isinstance(node, list):
            children = ((str(i), item) for i, item in enumerate(node))  # type: ignore[assignment]
        else:
            if isinstance(node, int) and not MIN_INT <= node <= MAX_INT:
                raise JsonLimitExceeded("json_number_too_large", "integers fit in 64 bits", path)
            continue
        if depth >= max_depth:
            raise JsonLimitExceeded(
                "json_too_deep", f"JSON is nested at most {max_depth} levels deep", path
            )
        for key, child in children:
            key = str(key)
            if len(key) > max_key:
                raise JsonLimitExceeded(
                    "json_key_too_long",
                    f"an object key has at most {max_key} characters",
                    path,
                )
            stack.append((child, depth + 1, f"{path}.{key}" if path else key))


def _checked(value: Any) -> Any:
    try:
        check_json(value)
    except JsonLimitExceeded as exc:
        raise PydanticCustomError(exc.code, exc.message) from exc
    return value


# A JSON object field of a request model, held to the limits above (the depth counts from the
# field, so a whole request stays a few levels under any parser's limit).
LimitedJsonObject = Annotated[dict[str, Any], AfterValidator(_checked)]
# A JSON array field (e.g. Slack's Block Kit blocks), held to the same limits.
LimitedJsonList = Annotated[list[Any], AfterValidator(_checked)]
