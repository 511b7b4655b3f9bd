"""A shortcut past the router for the few routes that carry the serving load.

FastAPI tries its routes in order, then builds a request and solves dependencies for the one
that matched; for `POST /v1/embeddings` that was a measurable share of event-loop CPU. Here an
exact (method, path) lookup sends such requests straight to the route's ASGI app. The routes
stay registered on the app as usual, so nothing about them (405s, the route table, the
deny-by-default check) depends on this shortcut being present.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class HotRoutes:
    """Pure ASGI middleware: exact matches go to their route's app, the rest to `app`."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self._table = {
            (method, route.path): route for route in routes for method in (route.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            route = self._table.get((scope["method"], path))
            if route is not None:
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                await route.app(scope, receive, send)
                return
        await self.app(scope, receive, send)
