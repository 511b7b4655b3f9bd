"""The gate every non-public route passes: authenticate, authorise, rate-limit.

Deny by default: routes declare the permission they need with `requires(...)`, and a test walks
the route table to fail on any route that is neither public nor guarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from embedgate.errors import ErrorKind, ServiceError
from embedgate.security.client_ip import Network, client_ip
from embedgate.security.jwt_auth import JwtVerifier, looks_like_jwt
from embedgate.security.key_service import KeyService
from embedgate.security.ratelimit import Limit, RateLimiter
from embedgate.security.roles import Permission, Principal, Role

PUBLIC_PATHS = frozenset({"/health", "/ready"})
ANONYMOUS_ADMIN = Principal(subject="anonymous", role=Role.ADMIN)


def _unauthenticated(message: str = "Invalid API key") -> ServiceError:
    return ServiceError(
        ErrorKind.UNAUTHENTICATED, message, headers={"WWW-Authenticate": 'Bearer realm="embedgate"'}
    )


def credential_from(headers: Any) -> str:
    """`Authorization: Bearer <token>` (any case) or `x-api-key`; never the query string."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthenticated("Invalid API key: use 'Authorization: Bearer <key>'")
        token = token.strip()
        if not token:
            raise _unauthenticated("Invalid API key: the Bearer token is empty")
        return str(token)
    api_key = headers.get("x-api-key")
    if api_key is not None and api_key.strip():
        return str(api_key.strip())
    raise _unauthenticated(
        "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
    )


@dataclass
class Security:
    """Everything the gate needs, built once by `create_app`."""

    keys: KeyService | None
    limiter: RateLimiter
    trusted_proxies: tuple[Network, ...] = ()
    jwt: JwtVerifier | None = None
    enabled: bool = True
    default_rpm: int | None = None
    default_tpm: int | None = None
    failed_auth_per_minute: int = 30

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        if not self.trusted_proxies:  # nobody may set X-Forwarded-For: skip the header lookup
            return peer or ""
        return client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted_proxies)

    async def authenticate(self, request: Request, ip: str) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        self.limiter.raise_if_refused("auth", ip, self.failed_auth_per_minute)
        try:
            token = credential_from(request.headers)
            principal = None
            if self.jwt is not None and looks_like_jwt(token):
                principal = await self.jwt.verify(token)
            elif self.keys is not None:
                principal = await self.keys.authenticate(token, ip)
            if principal is None:
                raise _unauthenticated()
        except ServiceError:
            await self.limiter.hit("auth", ip, self.failed_auth_per_minute)
            raise
        return principal

    async def admit(
        self, request: Request, permission: Permission, *, defer_limits: bool = False
    ) -> Principal:
        """Authenticate, authorise and charge the request limit.

        With `defer_limits` the request limit is only checked against refusals this process
        already knows of, and the caller charges it later with `charge_usage`, together with
        the tokens once they are counted: one store round trip per request instead of two.
        """
        ip = self.client_ip(request)
        state = request.scope.setdefault("state", {})
        state["client_ip"] = ip
        principal = await self.authenticate(request, ip)
        state["principal"] = principal
        if not principal.can(permission):
            raise ServiceError(
                ErrorKind.FORBIDDEN,
                f"this key's role ({principal.role.value}) may not {permission.value}",
            )
        rpm = principal.rpm or self.default_rpm
        if rpm is not None and self.enabled:
            if not defer_limits:
                await self._charge(request, principal, [Limit("requests", rpm)])
            else:
                self.limiter.raise_if_refused("requests", principal.subject, rpm)
        return principal

    async def charge_usage(
        self, request: Request, principal: Principal, tokens: int | None
    ) -> None:
        """The limits `admit(defer_limits=True)` left: the request, and its tokens when known
        (None: the request failed before they were counted), all or nothing."""
        if not self.enabled:
            return
        limits = []
        rpm = principal.rpm or self.default_rpm
        if rpm is not None:
            limits.append(Limit("requests", rpm))
        tpm = principal.tpm or self.default_tpm
        if tpm is not None and tokens is not None:
            limits.append(Limit("tokens", tpm, tokens))
        if limits:
            await self._charge(request, principal, limits)

    async def _charge(self, request: Request, principal: Principal, limits: list[Limit]) -> None:
        statuses = await self.limiter.charge(principal.subject, limits)
        headers = request.scope.setdefault("state", {}).setdefault("ratelimit_headers", {})
        for status in statuses:
            headers.update(status.headers())


class Requires:
    """The dependency object; its `permission` is what the deny-by-default test reads."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        security: Security = request.app.state.embedgate.security
        return await security.admit(request, self.permission)


def requires(permission: Permission) -> Any:
    return Depends(Requires(permission))


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
    return [
        path for path, guard in route_table(routes) if guard is None and path not in PUBLIC_PATHS
    ]
