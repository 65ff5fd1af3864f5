"""Field types of the HTTP APIs' models: strict on the way in, one UTC instant on the way out.

Pydantic's lax mode reads `0` as false and `0.5` as 1970-01-01T00:00:00.5Z; a client that
sends them has a bug we should tell it about, so request models refuse what the schema does
not describe. Responses carry every instant as RFC 3339 in UTC with its offset (`Z`), also
where the database hands back a naive value (SQLite keeps no offset).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict, StrictBool, StrictFloat

__all__ = [
    "RequestDate",
    "RequestDateTime",
    "RequestTime",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "UtcDateTime",
]

_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected an RFC 3339 string, not a number")
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an RFC 3339 string, not a number")
    return value


def _whole_number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # stored in UTC, read back without its offset
    return value.astimezone(UTC)


RequestDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]
RequestDate = Annotated[date, BeforeValidator(_not_a_number)]
# 540 is not 00:09: YAML 1.1 reads an unquoted 09:00 as that number.
RequestTime = Annotated[time, BeforeValidator(_not_a_number)]
UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
# JSON Schema's integer is any number without a fraction: 2.0 is one, "2", 2.5 and true are not.
StrictInt = Annotated[int, BeforeValidator(_whole_number), Strict()]
