"""Bearer tokens, scopes and workspace isolation through the shared auth dependency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from shared.app import Context, ServiceSpec, create_app
from shared.auth import Principal, issue_token, require_scope, verify_token
from shared.db import new_base
from shared.errors import NotFound, Unauthorized
from shared.inbox import inbox_table
from shared.outbox import outbox_table
from tests.helpers import SECRET, embedded_settings, running, token

Base = new_base()
outbox_table(Base.metadata)
inbox_table(Base.metadata)


class Note(Base):  # type: ignore[valid-type, misc]
    __tablename__ = "notes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    text: Mapped[str] = mapped_column(String(200))


router = APIRouter()
Reader = Annotated[Principal, Depends(require_scope("notes:read"))]
Writer = Annotated[Principal, Depends(require_scope("notes:write"))]


@router.post("/v1/notes/{note_id}", status_code=201)
async def create_note(note_id: str, principal: Writer, ctx: Context) -> dict[str, str]:
    async with ctx.uow() as uow:
        uow.session.add(Note(id=note_id, workspace=principal.workspace, text="hello"))
    return {"id": note_id}


@router.get("/v1/notes/{note_id}")
async def read_note(note_id: str, principal: Reader, ctx: Context) -> dict[str, str]:
    async with ctx.sessions() as session:
        note = await session.scalar(
            select(Note).where(Note.id == note_id, Note.workspace == principal.workspace)
        )
    if note is None:
        raise NotFound(f"note {note_id} not found")
    return {"id": note.id, "text": note.text}


def spec(tmp_path: Path) -> ServiceSpec:
    return ServiceSpec(
        name="notes", port=0, metadata=Base.metadata, migrations=tmp_path, routers=[router]
    )


@pytest.fixture
async def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(spec(tmp_path), embedded_settings(tmp_path, migrate_on_start=False))
    async with running(app) as client:
        async with app.state.ctx.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield client


class TestTokens:
    def test_a_token_carries_workspace_and_scopes(self) -> None:
        principal = verify_token(SECRET, issue_token(SECRET, "acme", ["notes:read"]))
        assert principal.workspace == "acme"
        assert principal.allows("notes:read")
        assert not principal.allows("notes:write")

    def test_admin_scope_allows_everything(self) -> None:
        assert verify_token(SECRET, issue_token(SECRET, "acme", ["admin"])).allows("x:y")

    def test_a_token_signed_with_another_secret_is_refused(self) -> None:
        with pytest.raises(Unauthorized):
            verify_token(
                SECRET, issue_token("another-secret-of-enough-length-0123456789", "acme", ["admin"])
            )


class TestHttpAuth:
    async def test_no_token_answers_401(self, client) -> None:  # type: ignore[no-untyped-def]
        response = await client.get("/v1/notes/n1")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthorized"

    async def test_a_forged_token_answers_401(self, client) -> None:  # type: ignore[no-untyped-def]
        response = await client.get("/v1/notes/n1", headers={"Authorization": "Bearer abc.def.ghi"})
        assert response.status_code == 401

    async def test_wrong_scope_answers_403(self, client) -> None:  # type: ignore[no-untyped-def]
        response = await client.post("/v1/notes/n1", headers=token("acme", "notes:read"))
        assert response.status_code == 403
        assert response.json()["required_scope"] == "notes:write"

    async def test_another_workspaces_object_answers_404(self, client) -> None:  # type: ignore[no-untyped-def]
        created = await client.post("/v1/notes/n1", headers=token("acme", "notes:write"))
        assert created.status_code == 201
        own = await client.get("/v1/notes/n1", headers=token("acme", "notes:read"))
        assert own.status_code == 200
        foreign = await client.get("/v1/notes/n1", headers=token("globex", "notes:read"))
        assert foreign.status_code == 404
        assert "hello" not in foreign.text
