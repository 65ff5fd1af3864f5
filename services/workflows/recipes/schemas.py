"""Request and response models of the recipes API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class RecipeRead(BaseModel):
    name: str
    title: str
    summary: str
    parameters: dict[str, Any]  # the JSON Schema of the install body


class RecipeList(BaseModel):
    items: list[RecipeRead]
