"""The rules every guarded request passes: credential parsing, authentication,
authorisation and request limits. Framework-free on purpose: the HTTP adapter
(`embedgate.api.guard`) calls these with plain values, and so can any other surface (the
console's routes, a future gRPC endpoint) without copying a rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from embedgate.errors import ErrorKind, LimitStatus, ServiceError
from embedgate.identity import Permission, Principal, Role
from embedgate.security.client_ip import Network, client_ip
from embedgate.security.jwt_auth import JwtVerifier, looks_like_jwt
from embedgate.security.key_service import KeyService
from embedgate.security.ratelimit import Limit, RateLimiter

log = logging.getLogger(__name__)
ANONYMOUS_ADMIN = Principal(subject="anonymous", role=Role.ADMIN)


class HeaderLookup(Protocol):
    """Case-insensitive request headers (starlette's `Headers`, a gRPC metadata view...)."""

    def get(self, key: str, /) -> str | None: ...


def _unauthenticated(message: str = "Invalid API key") -> ServiceError:
    return ServiceError(ErrorKind.UNAUTHENTICATED, message)


def credential_from(headers: HeaderLookup) -> str:
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
    """Everything the rules need, built once by the composition root."""

    keys: KeyService | None
    limiter: RateLimiter
    trusted_proxies: tuple[Network, ...] = ()
    jwt: JwtVerifier | None = None
    enabled: bool = True
    default_rpm: int | None = None
    default_tpm: int | None = None
    failed_auth_per_minute: int = 30

    def client_ip(self, peer: str | None, headers: HeaderLookup) -> str:
        """The caller's address: the peer, or X-Forwarded-For walked past trusted proxies."""
        if not self.trusted_proxies:  # nobody may set X-Forwarded-For: skip the header lookup
            return peer or ""
        return client_ip(peer, headers.get("x-forwarded-for"), self.trusted_proxies)

    async def authenticate(
        self, headers: HeaderLookup, ip: str, *, stale_ok_s: float = 0.0
    ) -> Principal:
        """Who is calling. A credential that fails counts against the caller's address, and
        an address over `failed_auth_per_minute` gets 429 for failing credentials only: a
        valid key is never refused because other callers at the same address keep failing
        (one misconfigured app must not lock out its neighbours)."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        try:
            token = credential_from(headers)
            principal = None
            if self.jwt is not None and looks_like_jwt(token):
                principal = await self.jwt.verify(token)
            elif self.keys is not None:
                principal = await self.keys.authenticate(token, ip, stale_ok_s=stale_ok_s)
            if principal is None:
                raise _unauthenticated()
        except ServiceError as exc:
            if exc.kind is ErrorKind.UNAUTHENTICATED:
                await self._count_failure(ip)
            raise
        return principal

    async def _count_failure(self, ip: str) -> None:
        """429 when this address is over its failure limit; a limiter that is down leaves
        the answer a 401 (authentication comes first, whatever Redis is doing)."""
        self.limiter.raise_if_refused("auth", ip, self.failed_auth_per_minute)
        try:
            await self.limiter.hit("auth", ip, self.failed_auth_per_minute)
        except ServiceError as exc:
            if exc.kind is not ErrorKind.LIMITS_UNAVAILABLE:
                raise
            log.warning("could not count a failed authentication: the limiter is unavailable")

    async def authorise(
        self, principal: Principal, permission: Permission, *, defer_limits: bool = False
    ) -> list[LimitStatus]:
        """Check the role, then charge the request limit; returns the windows it charged.

        With `defer_limits` the request limit is only checked against refusals this process
        already knows of, and the caller charges it later with `charge_usage`, together with
        the tokens once they are counted: one store round trip per request instead of two.
        """
        if not principal.can(permission):
            raise ServiceError(
                ErrorKind.FORBIDDEN,
                f"this key's role ({principal.role.value}) may not {permission.value}",
            )
        rpm = principal.rpm or self.default_rpm
        if rpm is None or not self.enabled:
            return []
        if defer_limits:
            self.limiter.raise_if_refused("requests", principal.subject, rpm)
            return []
        return await self._charge(principal, [Limit("requests", rpm)])

    async def charge_usage(self, principal: Principal, tokens: int | None) -> list[LimitStatus]:
        """The limits `authorise(defer_limits=True)` left: the request, and its tokens when
        known (None: the request failed before they were counted), all or nothing."""
        if not self.enabled:
            return []
        limits = []
        rpm = principal.rpm or self.default_rpm
        if rpm is not None:
            limits.append(Limit("requests", rpm))
        tpm = principal.tpm or self.default_tpm
        if tpm is not None and tokens is not None:
            limits.append(Limit("tokens", tpm, tokens))
        return await self._charge(principal, limits) if limits else []

    async def _charge(self, principal: Principal, limits: list[Limit]) -> list[LimitStatus]:
        return await self.limiter.charge(principal.subject, limits)
