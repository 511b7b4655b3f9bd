"""The shortcut past the router: exact matches reach the endpoint directly, everything else
(other methods, other paths) still goes through FastAPI, and the wrappers around it (request
context, CORS) still apply."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from embedgate.api.hot_routes import HotRoutes
from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import admin_key, client_for, fake_factory


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope)


def dispatch(app: HotRoutes, method: str, path: str, root_path: str = "") -> Scope:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path}
    if root_path:
        scope["root_path"] = root_path

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(_: Any) -> None:
        return None

    asyncio.run(app(scope, receive, send))
    return scope


def test_exact_matches_skip_the_router() -> None:
    endpoint, router = Recorder(), Recorder()
    route = Route("/v1/embeddings", endpoint, methods=["POST"])
    hot = HotRoutes(router, [route])

    scope = dispatch(hot, "POST", "/v1/embeddings")
    assert endpoint.calls == [scope] and not router.calls
    assert scope["route"] is route  # metrics and audit label the request by its route

    dispatch(hot, "GET", "/v1/embeddings")  # wrong method: the router answers 405
    dispatch(hot, "POST", "/v1/embeddings/extra")
    dispatch(hot, "POST", "/v1/models")
    assert len(endpoint.calls) == 1 and len(router.calls) == 3

    dispatch(hot, "POST", "/api/v1/embeddings", root_path="/api")  # mounted under a prefix
    assert len(endpoint.calls) == 2


def test_the_wrappers_still_apply_to_the_hot_route(tmp_path: Path) -> None:
    origin = "https://console.example"
    app = create_app(Settings(data_dir=tmp_path, cors_origins=[origin]), fake_factory())
    with client_for(app) as c:
        ok = c.post("/v1/embeddings", json={"input": "hello"}, headers={"Origin": origin})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == origin  # CORS wraps it
        assert ok.headers["x-request-id"]  # so does the request context
        ids = {c.get("/health").headers["x-request-id"] for _ in range(50)}
        assert len(ids) == 50 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
        bad = c.post("/v1/embeddings", json={"input": 5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
        headers = {"Authorization": f"Bearer {admin_key(app)}"}
        metrics = c.get("/metrics", headers=headers).text
    assert 'embedgate_requests_total{route="/v1/embeddings",status="200"} 1.0' in metrics
    assert 'embedgate_requests_total{route="/v1/embeddings",status="400"} 1.0' in metrics
