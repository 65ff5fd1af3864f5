"""The recipes API: list the ready-made workflows and install one with a single call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from services.workflows.definitions import handlers as definitions
from services.workflows.definitions.api import read
from services.workflows.definitions.schemas import WorkflowRead
from services.workflows.doors import Doors
from services.workflows.recipes import domain, handlers
from services.workflows.recipes.schemas import RecipeList, RecipeRead
from shared.app import Context
from shared.auth import Principal, require_scope

Reader = Annotated[Principal, Depends(require_scope("workflows:read"))]
Writer = Annotated[Principal, Depends(require_scope("workflows:write"))]


def router(doors: Doors) -> APIRouter:
    """The recipe routes (mounted before `/v1/workflows/{id}`, which would shadow them)."""
    api = APIRouter(prefix="/v1/workflows/recipes", tags=["recipes"])

    @api.get("")
    async def list_recipes(who: Reader) -> RecipeList:
        """The recipes that can be installed, with the parameters each accepts."""
        return RecipeList(
            items=[
                RecipeRead(
                    name=r.name,
                    title=r.title,
                    summary=r.summary,
                    parameters=r.params.model_json_schema(),
                )
                for r in domain.RECIPES.values()
            ]
        )

    @api.post("/{name}", status_code=201)
    async def install_recipe(
        ctx: Context,
        who: Writer,
        name: str,
        params: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> WorkflowRead:
        """Install a recipe as a new workflow of the workspace (editable like any other)."""
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.install_recipe(who.workspace, name, params, book, store, book.now)
            document = await definitions.document_of(who.workspace, row.id, row.version, store)
        return read(row, document)

    return api
