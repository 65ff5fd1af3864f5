"""Template rules: sandboxed Jinja2 rendering, save-time validation, e-mail link tracking.

Pure: no I/O. User-edited templates run in Jinja2's immutable sandbox (no attribute starting
with `_`, no mutation of the data handed in, no unsafe callables), with StrictUndefined so a
misspelt variable is an error instead of an empty string.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The names a template may use; anything else is an unknown variable, refused at save time.
ROOTS = frozenset(
    {"contact", "owner", "score", "vars", "workspace", "unsubscribe_url", "contact_url"}
)
CONTACT_FIELDS = (
    "id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "source",
    "lifecycle_stage",
    "owner_id",
    "subscription_status",
    "score",
    "tags",
    "lists",
    "created_at",
    "updated_at",
    "last_interaction_at",
)
PARTS = ("subject", "html", "text")


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=True
    )


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


@dataclass(frozen=True)
class TemplateSource:
    """The parts of a message as the author wrote them; `blocks` is Slack Block Kit JSON whose
    strings are templates."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    blocks: list[Any] | None = None

    def parts(self) -> Iterator[tuple[str, str]]:
        """Every template text with where it sits (`subject`, `blocks.0.text.text`, …)."""
        for name in PARTS:
            value = getattr(self, name)
            if value is not None:
                yield name, value
        if self.blocks is not None:
            yield from _strings(self.blocks, "blocks")


@dataclass(frozen=True)
class Rendered:
    """A rendered message."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    blocks: list[Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"subject": self.subject, "html": self.html, "text": self.text}
        values["blocks"] = self.blocks
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class TemplateProblem:
    """Why a template cannot be saved: where, a machine-readable code and a message."""

    field: str
    code: str  # `syntax_error`, `unknown_variable`, `sandbox_violation`, `render_error`
    message: str


class RenderFailed(Exception):
    """A template did not render with the data at hand (a variable missing for this contact)."""

    def __init__(self, problem: TemplateProblem) -> None:
        super().__init__(f"{problem.field}: {problem.message}")
        self.problem = problem


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}.{i}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")


def _env_for(part: str) -> ImmutableSandboxedEnvironment:
    return _HTML if part == "html" else _TEXT


def _static_problems(part: str, text: str) -> list[TemplateProblem]:
    """Syntax, unknown top-level names and private attributes, found without rendering (so a
    branch the sample data does not take is checked too)."""
    env = _env_for(part)
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as exc:
        return [TemplateProblem(part, "syntax_error", f"line {exc.lineno}: {exc.message}")]
    problems = [
        TemplateProblem(part, "unknown_variable", f"unknown variable `{name}`")
        for name in sorted(meta.find_undeclared_variables(tree) - ROOTS)
    ]
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else _const(getattr(node, "arg", None))
        if isinstance(name, str) and name.startswith("_"):
            problems.append(
                TemplateProblem(part, "sandbox_violation", f"access to `{name}` is not allowed")
            )
    return problems


def _const(node: nodes.Node | None) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def validate(source: TemplateSource) -> list[TemplateProblem]:
    """Every reason the template cannot be saved (empty when it can): syntax errors, unknown
    variables, sandbox violations, and errors rendering it against sample data."""
    problems: list[TemplateProblem] = []
    for part, text in source.parts():
        found = _static_problems(part, text)
        if not found:
            try:
                _render_one(part, text, SAMPLE)
            except RenderFailed as exc:
                found = [exc.problem]
        problems.extend(found)
    return problems


def _render_one(part: str, text: str, variables: Mapping[str, Any]) -> str:
    env = _env_for(part)
    try:
        return env.from_string(text).render(variables)
    except SecurityError as exc:
        raise RenderFailed(TemplateProblem(part, "sandbox_violation", str(exc))) from exc
    except UndefinedError as exc:
        raise RenderFailed(TemplateProblem(part, "unknown_variable", exc.message or "")) from exc
    except TemplateSyntaxError as exc:
        raise RenderFailed(TemplateProblem(part, "syntax_error", exc.message or "")) from exc
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise RenderFailed(TemplateProblem(part, "render_error", str(exc))) from exc


def _render_blocks(value: Any, path: str, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_one(path, value, variables)
    if isinstance(value, list):
        return [_render_blocks(v, f"{path}.{i}", variables) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render_blocks(v, f"{path}.{k}", variables) for k, v in value.items()}
    return value


def render(source: TemplateSource, variables: Mapping[str, Any]) -> Rendered:
    """The message for these variables; raises RenderFailed with the failing part."""
    return Rendered(
        subject=_render_one("subject", source.subject, variables).strip()
        if source.subject is not None
        else None,
        html=_render_one("html", source.html, variables) if source.html is not None else None,
        text=_render_one("text", source.text, variables) if source.text is not None else None,
        blocks=_render_blocks(source.blocks, "blocks", variables)
        if source.blocks is not None
        else None,
    )


# ---------------------------------------------------------------------------------------------
# Variables


class _AnyKey(dict[str, Any]):
    """Sample data for maps whose keys are only known at send time (custom fields, `vars`)."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def variables_for(
    contact: Mapping[str, Any] | None,
    owner: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
    *,
    workspace: str,
    unsubscribe_url: str | None = None,
    contact_url: str | None = None,
) -> dict[str, Any]:
    """What a template sees: the contact (its fields, `custom_fields` and `name`), its owner,
    its score, the request's own `vars` and the links notifier makes."""
    view: dict[str, Any] | None = None
    if contact is not None:
        view = {name: contact.get(name) for name in CONTACT_FIELDS}
        view["custom_fields"] = dict(contact.get("custom_fields") or {})
        names = [contact.get("first_name"), contact.get("last_name")]
        view["name"] = " ".join(n for n in names if n) or contact.get("email") or ""
    return {
        "contact": view,
        "owner": dict(owner) if owner else None,
        "score": contact.get("score") if contact else None,
        "vars": dict(extra),
        "workspace": workspace,
        "unsubscribe_url": unsubscribe_url,
        "contact_url": contact_url,
    }


def _sample() -> dict[str, Any]:
    contact: dict[str, Any] = {name: f"<{name}>" for name in CONTACT_FIELDS}
    contact |= {"score": 42.0, "tags": ["sample"], "lists": ["sample"], "name": "Ada Lovelace"}
    contact["custom_fields"] = _AnyKey()
    return {
        "contact": contact,
        "owner": {"id": "<owner_id>", "name": "<owner>", "email": "owner@example.com"},
        "score": 42.0,
        "vars": _AnyKey(),
        "workspace": "<workspace>",
        "unsubscribe_url": "https://example.com/unsubscribe",
        "contact_url": "https://example.com/contact",
    }


SAMPLE = _sample()


def sample_variables() -> dict[str, Any]:
    """Sample data for previews without a contact."""
    return _sample()


# ---------------------------------------------------------------------------------------------
# Slack


def default_blocks(text: str, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Block Kit for a message without blocks of its own: the text, the contact's key fields,
    score and owner, and a link back to the contact."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    contact = variables.get("contact")
    if contact:
        owner = variables.get("owner") or {}
        facts = {
            "Name": contact.get("name"),
            "Email": contact.get("email"),
            "Company": contact.get("company"),
            "Stage": contact.get("lifecycle_stage"),
            "Score": contact.get("score"),
            "Owner": owner.get("name") or owner.get("id"),
        }
        fields = [
            {"type": "mrkdwn", "text": f"*{label}*\n{value}"}
            for label, value in facts.items()
            if value not in (None, "")
        ]
        if fields:
            blocks.append({"type": "section", "fields": fields[:10]})
    if link := variables.get("contact_url"):
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open contact>"}]}
        )
    return blocks


# ---------------------------------------------------------------------------------------------
# E-mail tracking

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def rewrite_links(html: str, tracked: Callable[[str], str]) -> str:
    """Every `http(s)` link of anchors replaced by its tracked twin (`mailto:` and the
    unsubscribe link are left alone by the caller's `tracked`)."""

    def swap(match: re.Match[str]) -> str:
        original = html_lib.unescape(match.group(3))
        return (
            f"{match.group(1)}{match.group(2)}{html_lib.escape(tracked(original))}{match.group(2)}"
        )

    return _HREF.sub(swap, html)


def add_open_pixel(html: str, pixel_url: str) -> str:
    """A 1x1 image at the end of the body (before `</body>` when there is one)."""
    tag = (
        f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" style="display:none">'
    )
    index = html.lower().rfind("</body>")
    return html + tag if index < 0 else html[:index] + tag + html[index:]


_URL = re.compile(r"https?://[^\s<>\"']+")


def html_from_text(text: str) -> str:
    """An HTML part for mail written as text: escaped, paragraphs kept, links clickable (and
    so trackable)."""

    def paragraph(block: str) -> str:
        escaped = html_lib.escape(block.strip())
        linked = _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
        return "<p>" + linked.replace("\n", "<br>\n") + "</p>"

    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "\n".join(paragraph(b) for b in blocks)
