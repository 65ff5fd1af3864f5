"""Channel secrets sealed at rest with Fernet (AES-128-CBC + HMAC-SHA256); several keys allow
rotation: the first seals, any opens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    """Seals and opens a channel's secrets (a JSON object of strings)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, secrets: Mapping[str, str]) -> str | None:
        if not secrets:
            return None
        return self._fernet.encrypt(orjson.dumps(dict(secrets))).decode()

    def open(self, sealed: str | None) -> dict[str, str]:
        if not sealed:
            return {}
        try:
            values = orjson.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise ValueError("channel secrets cannot be opened with the configured keys") from exc
        return {str(k): str(v) for k, v in values.items()}

    def __repr__(self) -> str:  # never print keys
        return "SecretBox(<keys>)"
