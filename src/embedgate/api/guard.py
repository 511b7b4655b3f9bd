"""The HTTP side of the security rules: a thin adapter from a request to `Security`.

Deny by default: routes declare the permission they need with `requires(...)`, and
`unguarded_routes` walks the route table so that `create_app` refuses to build an app with a
route that is neither public nor guarded.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from embedgate.api.context import request_context
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Permission, Principal
from embedgate.security.gate import ANONYMOUS_ADMIN, Security

PUBLIC_PATHS = frozenset({"/health", "/ready"})
METRICS_STALE_KEY_S = 3600.0  # how old a cached key may be for a scrape during an outage
CONSOLE_PREFIX = "/ui"  # the web console's static files: public, like a login page


def is_public(path: str) -> bool:
    """Paths that answer without a key: health, readiness, and the console's static files
    (which hold no data; everything they show comes from the API with the user's key)."""
    return path in PUBLIC_PATHS or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


async def admit(
    request: Request,
    security: Security | None,
    permission: Permission,
    *,
    defer_limits: bool = False,
) -> Principal:
    """Authenticate, authorise and charge the request limit, recording each finding in the
    request's context as soon as it is known (a refused request's audit record still names
    the caller and its address)."""
    if security is None:
        raise ServiceError(ErrorKind.NOT_READY, "the server is starting")
    context = request_context(request.scope)
    peer = request.client.host if request.client else None
    context.client_ip = security.client_ip(peer, request.headers)
    # a scrape during a database outage is checked against the key cache (verified within
    # the hour), so the outage shows in the metrics instead of as a failed scrape
    stale_ok_s = METRICS_STALE_KEY_S if permission is Permission.METRICS else 0.0
    principal = await security.authenticate(
        request.headers, context.client_ip, stale_ok_s=stale_ok_s
    )
    context.principal = principal
    charged = await security.authorise(principal, permission, defer_limits=defer_limits)
    context.limits.update((status.kind, status) for status in charged)
    return principal


async def charge_usage(
    request: Request, security: Security, principal: Principal, tokens: int | None
) -> None:
    """Charge what `admit(defer_limits=True)` left, and keep the windows for the response."""
    context = request_context(request.scope)
    context.tokens_charged = tokens
    charged = await security.charge_usage(principal, tokens)
    context.limits.update((status.kind, status) for status in charged)


class Requires:
    """The dependency object; its `permission` is what the deny-by-default check reads.
    `defer_limits`: the route charges the limits itself once it knows its tokens."""

    def __init__(self, permission: Permission, *, defer_limits: bool = False) -> None:
        self.permission = permission
        self.defer_limits = defer_limits

    async def __call__(self, request: Request) -> Principal:
        return await admit(
            request,
            request.app.state.embedgate.security,
            self.permission,
            defer_limits=self.defer_limits,
        )


def requires(permission: Permission, *, defer_limits: bool = False) -> Any:
    return Depends(Requires(permission, defer_limits=defer_limits))


def route_table(routes: list[Any], prefix: str = "") -> list[tuple[str, Permission | None]]:
    """Every endpoint (descending into included routers) with the permission guarding it."""
    table: list[tuple[str, Permission | None]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI's wrapper around an included router
            context = getattr(route, "include_context", None)
            table += route_table(list(inner.routes), prefix + getattr(context, "prefix", ""))
            continue
        path = prefix + str(getattr(route, "path", "?"))
        dependant = getattr(route, "dependant", None)
        guards = [
            d.call.permission
            for d in (dependant.dependencies if dependant is not None else [])
            if isinstance(d.call, Requires)
        ]
        # a plain ASGI endpoint declares the permission it checks itself
        declared = getattr(getattr(route, "endpoint", None), "permission", None)
        if dependant is None and isinstance(declared, Permission):
            guards.append(declared)
        table.append((path, guards[0] if guards else None))
    return table


def unguarded_routes(routes: list[Any]) -> list[str]:
    return [path for path, guard in route_table(routes) if guard is None and not is_public(path)]


class DeferredUsage:
    """The request's rate limits, charged once: with its tokens when the engine has counted
    them (one store round trip for both limits), or alone when the request fails first.
    For routes guarded with `defer_limits=True` (embeddings, rerank)."""

    def __init__(self, security: Security, request: Request, principal: Principal) -> None:
        self.security = security
        self.request = request
        self.principal = principal
        self.context = request_context(request.scope)
        self.charged = False

    async def charge(self, tokens: int) -> None:
        self.context.audit.n_tokens = tokens
        self.charged = True
        await charge_usage(self.request, self.security, self.principal, tokens)

    async def charge_if_not_yet(self) -> None:
        if not self.charged:
            self.charged = True
            await charge_usage(self.request, self.security, self.principal, None)


def fair_queue_caller(principal: Principal, request: Request) -> str:
    """Whose turn it is in the fair queue: the key (or token subject); without
    authentication, the client's address."""
    if principal is ANONYMOUS_ADMIN:
        return f"ip:{request_context(request.scope).client_ip}"
    return principal.subject
