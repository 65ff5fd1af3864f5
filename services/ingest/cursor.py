"""The quarantine's page cursor: when and which row the last page ended at, opaque to clients."""

from __future__ import annotations

import base64
from datetime import datetime

from shared.errors import InvalidInput


def encode_cursor(at: datetime, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{last_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), last_id
    except ValueError as exc:
        raise InvalidInput(
            "The cursor is not one this API gave out.",
            errors=[{"field": "cursor", "code": "invalid_cursor", "message": "bad cursor"}],
        ) from exc
