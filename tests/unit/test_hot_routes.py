"""Hot routes answer like any other route: correlation id, metrics, problem+json errors."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from shared import metrics
from shared.app import ServiceApp
from shared.errors import NotFound, install_error_handlers
from shared.hot_routes import HotRoute, HotRoutes
from shared.logs import correlation_id_var


async def echo(request: Request) -> Response:
    item = request.path_params["item"]
    if item == "missing":
        raise NotFound("no such item")
    if item == "broken":
        raise RuntimeError("boom")
    if item == "gone":
        raise ClientDisconnect()  # what reading the body raises when the client hung up
    return Response(f"{item}|{correlation_id_var.get()}", status_code=202)


def app() -> ServiceApp:
    service = ServiceApp()
    install_error_handlers(service)

    @service.get("/v1/items/{item}/echo")
    async def not_hot(item: str) -> dict[str, str]:
        return {"item": item, "served_by": "router"}

    service.hot = HotRoutes(service, [HotRoute("POST", "/v1/items/{item}/echo", echo)], "unit")
    return service


def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_a_template_matches_whole_segments_only() -> None:
    route = HotRoute("POST", "/v1/items/{item}/echo", echo)
    scope = {"method": "POST", "path": "/v1/items/a1/echo"}
    assert route.match(scope) == {"item": "a1"}
    assert route.match({**scope, "path": "/v1/items/a/b/echo"}) is None
    assert route.match({**scope, "path": "/v1/items/a1/echo/more"}) is None
    assert route.match({**scope, "method": "GET"}) is None


async def test_served_with_its_path_params_and_the_callers_correlation_id() -> None:
    counter = metrics.HTTP_REQUESTS.labels("unit", "POST", "/v1/items/{item}/echo", "202")
    before = counter._value.get()
    async with client() as http:
        answer = await http.post("/v1/items/a1/echo", headers={"X-Correlation-Id": "c-9"})
    assert answer.status_code == 202
    assert answer.text == "a1|c-9"
    assert answer.headers["x-correlation-id"] == "c-9"
    assert counter._value.get() == before + 1


@pytest.mark.parametrize(
    ("item", "status", "code"),
    [
        ("missing", 404, "not_found"),
        ("broken", 500, "internal_error"),
        ("gone", 499, "client_disconnected"),
    ],
)
async def test_errors_answer_the_apps_problem_json(item: str, status: int, code: str) -> None:
    async with client() as http:
        answer = await http.post(f"/v1/items/{item}/echo")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == code
    assert answer.headers["x-correlation-id"]


async def test_other_methods_and_paths_go_through_the_app() -> None:
    async with client() as http:
        routed = await http.get("/v1/items/a1/echo")
        unknown = await http.post("/v1/elsewhere")
    assert routed.json() == {"item": "a1", "served_by": "router"}
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"


async def test_a_client_that_hung_up_is_not_logged_as_our_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client() as http:
        await http.post("/v1/items/gone/echo")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
