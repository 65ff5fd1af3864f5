"""Use case of recipes: install one as a normal, versioned workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.workflows.definitions import handlers as definitions
from services.workflows.definitions.handlers import DefinitionsStore
from services.workflows.engine.handlers import RunBook
from services.workflows.models import Workflow
from services.workflows.recipes import domain
from shared.errors import InvalidInput, NotFound


async def install_recipe(
    workspace: str,
    name: str,
    params: Any,
    book: RunBook,
    store: DefinitionsStore,
    now: datetime,
) -> Workflow:
    """Save the recipe's document as a new workflow of the workspace, enabled unless asked not."""
    try:
        document, enabled = domain.document_for(name, params)
    except domain.UnknownRecipe as exc:
        raise NotFound(f"No recipe {name!r}; GET /v1/workflows/recipes lists them.") from exc
    except domain.InvalidParams as exc:
        raise InvalidInput("The recipe's parameters are invalid.", errors=exc.errors) from exc
    row = await definitions.create_workflow(workspace, document, enabled, store, now)
    if enabled:
        row = await definitions.set_enabled(workspace, row.id, True, book, store)
    return row
