"""Files the embedded mode writes under its data directory are readable by their owner only."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from sqlalchemy import text

from services.__main__ import DEV_TOKEN_TTL, write_dev_token
from shared import db
from tests.helpers import SECRET, embedded_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_of(folder: Path, pattern: str) -> dict[str, int]:
    return {f.name: mode(f) for f in folder.glob(pattern)}


class TestPrivateFiles:
    def test_the_dev_token_is_owner_only_and_expires(self, tmp_path: Path) -> None:
        stale = tmp_path / "dev-token"
        stale.write_text("old\n")
        stale.chmod(0o644)  # left by an older version: tightened when rewritten
        path = write_dev_token(embedded_settings(tmp_path))
        assert path == stale
        assert mode(path) == 0o600
        claims = jwt.decode(path.read_text().strip(), SECRET, algorithms=["HS256"])
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        assert expires - datetime.now(UTC) <= DEV_TOKEN_TTL
        assert expires - datetime.now(UTC) > DEV_TOKEN_TTL - timedelta(minutes=1)
        assert claims["ws"] == "demo"

    async def test_sqlite_files_are_owner_only(self, tmp_path: Path) -> None:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/people.db")
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE person (email TEXT)"))
                await conn.execute(text("INSERT INTO person VALUES ('ann@example.com')"))
            modes = modes_of(tmp_path, "people.db*")
            assert set(modes) >= {"people.db", "people.db-wal", "people.db-shm"}
            assert modes == dict.fromkeys(modes, 0o600)
        finally:
            await engine.dispose()

    def test_the_generated_auth_secret_is_owner_only(self, tmp_path: Path) -> None:
        settings = embedded_settings(tmp_path, auth_secret=None)
        settings.resolved_auth_secret()
        assert mode(tmp_path / "auth-secret") == 0o600
