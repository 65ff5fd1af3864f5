"""Every service's OpenAPI document says what the API answers: problem+json errors from one
shared definition, /metrics as text; and the checked-in documents match the code."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from scripts import export_schemas
from scripts.export_schemas import SCHEMAS
from services.registry import SERVICES
from shared.errors import PROBLEM_JSON
from shared.openapi import PROBLEM_REF

METHODS = {"get", "post", "put", "patch", "delete"}


@functools.cache
def service_openapi(service: str) -> dict[str, Any]:
    return export_schemas.service_openapi(service)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.mark.parametrize("service", SERVICES)
class TestServiceDocuments:
    def test_every_error_answer_is_problem_json(self, service: str) -> None:
        for path, method, operation in operations(service_openapi(service)):
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    content = answer.get("content", {})
                    # Beside problem+json, only a browser's form post gets its page back (HTML).
                    assert PROBLEM_JSON in content, (method, path, status)
                    assert set(content) - {PROBLEM_JSON} <= {"text/html"}, (method, path, status)
                    assert content[PROBLEM_JSON]["schema"] == {"$ref": PROBLEM_REF}

    def test_every_bound_has_its_json_schema_name(self, service: str) -> None:
        def bounds(node: Any) -> list[str]:
            if isinstance(node, dict):
                found = [k for k in ("ge", "le", "gt", "lt") if k in node and "type" in node]
                return found + [b for child in node.values() for b in bounds(child)]
            if isinstance(node, list):
                return [b for child in node for b in bounds(child)]
            return []

        assert bounds(service_openapi(service)) == []

    def test_platform_answers_are_documented_on_every_operation(self, service: str) -> None:
        for path, method, operation in operations(service_openapi(service)):
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            assert "Retry-After" in responses["503"]["headers"]
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "422"} <= set(responses), (method, path)

    def test_metrics_are_documented_as_text(self, service: str) -> None:
        answer = service_openapi(service)["paths"]["/metrics"]["get"]["responses"]["200"]
        assert list(answer["content"]) == ["text/plain"]

    def test_checked_in_document_matches_the_code(self, service: str) -> None:
        path = SCHEMAS / "openapi" / f"{service}.json"
        checked_in = json.loads(path.read_text())
        assert checked_in == service_openapi(service), f"{path} is stale: run `make schemas`"


def test_ingest_documents_the_answers_only_its_routes_give() -> None:
    paths = service_openapi("ingest")["paths"]
    assert {"409", "413", "429"} <= set(paths["/v1/leads"]["post"]["responses"])
    submit = paths["/v1/forms/{form_id}/submissions"]["post"]["responses"]
    assert {"403", "413", "415", "429"} <= set(submit)


async def test_a_405_allows_every_method_served_on_the_path() -> None:
    from httpx import ASGITransport, AsyncClient

    from services.registry import spec
    from shared.app import create_app

    app = create_app(spec("ingest"))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        answer = await client.put("/v1/forms")
    assert answer.status_code == 405
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
