"""Personalisation: author-written templates rendered in Jinja2's sandbox.

`{{ contact.first_name | default("there") }}` falls back to the author's default when the
contact has no first name: missing and empty (`None`) values are both undefined here, and an
undefined value renders as the empty string rather than failing the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_CHARS = 20_000
MAX_OUTPUT_CHARS = 100_000


class RenderError(Exception):
    """A template could not be rendered (a sandbox violation or an error in its expressions)."""


# What `getattr` finds on a plain dict besides its items (methods, dunders).
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, where `contact.first_name` on a plain dict (every value a
    template reads is one) is its item straight away. Jinja tries the attribute first, and
    raising and catching an AttributeError for each lookup was a third of a render. A name
    `dict` has an attribute for (`items`, `get`, `__class__`) still goes the sandbox's way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    # Autoescape off: the output is a Slack text, an email subject, a task title; the channel
    # that turns it into HTML escapes it there.
    return _Sandbox(autoescape=False, undefined=ChainableUndefined)


def syntax_error(source: str) -> str | None:
    """Why a template does not parse, or None when it does."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return f"a template is at most {MAX_TEMPLATE_CHARS} characters"
    try:
        environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    return environment().from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """The template filled from `context`; RenderError when the sandbox refuses it."""
    if "{" not in source:
        return source
    try:
        text = str(_compiled(source).render(context))
    except SecurityError as exc:
        raise RenderError(f"refused by the sandbox: {exc}") from exc
    except TemplateError as exc:
        raise RenderError(str(exc)) from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
    return text[:MAX_OUTPUT_CHARS]


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Strings rendered as templates, recursively through lists and objects."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def strings_in(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string in a JSON value with its path, to check each template at save time."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in strings_in(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(v, f"{path}.{k}")]
    return []


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None and v != ""}
    return value


def context_of(
    contact: Mapping[str, Any] | None, workflow: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """What a template sees: `contact` (its fields and `custom_fields`), `custom` (the custom
    fields again), `owner`, `score`, `workflow` and extra variables (an event's data)."""
    person = _without_none(dict(contact or {}))
    custom = person.get("custom_fields", {})
    owner = _without_none({"id": person.get("owner_id"), "name": person.get("owner_name")})
    context = {
        "contact": person,
        "custom": custom,
        "owner": owner,
        "workflow": dict(workflow),
        **extra,
    }
    if "score" in person:  # an unknown score stays undefined, so `default(...)` applies
        context["score"] = person["score"]
    return context
