"""Templates render as Jinja's own immutable sandbox renders them: the shortcut for a dict's
items changes the speed of a lookup, never its result."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import ChainableUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.workflows.templates import domain

CONTEXT: dict[str, Any] = domain.context_of(
    {
        "id": "c1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": None,
        "custom_fields": {"plan": "pro", "items": "a custom field named like a method"},
        "owner_name": "Grace",
    },
    {"id": "w", "version": 1, "name": "Welcome"},
    {},
)


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.first_name }} {{ contact.last_name | default('-') }}",
        "{{ contact.missing.deeper | default('none') }}",
        "{{ contact.custom_fields.plan }} {{ custom.plan }} {{ owner.name }}",
        "{{ contact.custom_fields['items'] }} {{ contact.custom_fields.items() | list | length }}",
        "{{ contact.get('email') }} {{ contact.keys() | list | length }}",
        "{{ contact._private | default('hidden') }} {{ contact.__class__ }}",
        "{{ [contact.first_name, contact.last_name] | select | join(' ') }}",
    ],
)
def test_a_template_renders_as_in_jinjas_own_sandbox(source: str) -> None:
    reference = ImmutableSandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)
    assert domain.render(source, CONTEXT) == reference.from_string(source).render(CONTEXT)


def test_a_dicts_mutating_methods_are_still_refused() -> None:
    with pytest.raises(domain.RenderError, match=r"unsafe|sandbox"):
        domain.render("{{ contact.update({'email': 'x'}) }}", CONTEXT)
