"""JWTs from the company's identity provider (PyJWT).

Algorithms are pinned by configuration (``alg`` from the token only selects among them);
``exp``, ``iss`` and ``aud`` are required; ``crit`` extensions are refused; ``jku`` / ``x5u`` /
``jwk`` headers are never used. Signing keys come from the configured HS secret or a JWKS URL
cached for a TTL; an unknown ``kid`` triggers a refresh at most once per interval, and when the
IdP is down the cached keys serve until their TTL, then verification fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from embedgate.identity import Principal, Role

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"}
)


@dataclass(frozen=True)
class JwtConfig:
    algorithms: tuple[str, ...]
    issuer: str
    audience: str
    secret: bytes | None = None
    jwks_url: str | None = None
    role_claim: str = "role"
    collections_claim: str = "collections"
    models_claim: str = "models"
    leeway: float = 30.0
    jwks_ttl: float = 300.0
    jwks_refresh_interval: float = 30.0


Fetcher = Callable[[str], Awaitable[dict[str, Any]]]


async def _fetch_jwks(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


class JwksCache:
    def __init__(
        self, url: str, ttl: float, refresh_interval: float, fetch: Fetcher = _fetch_jwks
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._tried_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _refresh(self) -> None:
        self._tried_at = time.monotonic()
        self.fetches += 1
        try:
            data = await self._fetch(self.url)
            keyset = jwt.PyJWKSet.from_dict(data)
        except Exception as exc:
            log.warning("JWKS refresh failed", extra={"url": self.url, "error": type(exc).__name__})
            return
        self._keys = {k.key_id: k.key for k in keyset.keys if k.key_id}
        self._fetched_at = time.monotonic()

    async def key_for(self, kid: str | None) -> Any | None:
        if not kid:
            return None
        async with self._lock:
            now = time.monotonic()
            expired = now - self._fetched_at >= self.ttl
            unknown = kid not in self._keys
            if (expired or unknown) and now - self._tried_at >= self.refresh_interval:
                await self._refresh()
            if time.monotonic() - self._fetched_at >= self.ttl:
                return None  # IdP unreachable past the TTL: fail closed
            return self._keys.get(kid)


class JwtVerifier:
    def __init__(self, config: JwtConfig, jwks: JwksCache | None = None) -> None:
        self.config = config
        self.jwks = jwks or (
            JwksCache(config.jwks_url, config.jwks_ttl, config.jwks_refresh_interval)
            if config.jwks_url
            else None
        )

    async def verify(self, token: str) -> Principal | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if "crit" in header:
            return None  # we implement no critical extensions
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            return None
        if alg.startswith("HS"):
            key: Any = self.config.secret
        elif self.jwks is not None:
            key = await self.jwks.key_for(header.get("kid"))
        else:
            key = None
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal | None:
        try:
            role = Role(str(claims.get(self.config.role_claim)))
        except ValueError:
            return None
        raw = claims.get(self.config.collections_claim)
        collections: tuple[str, ...] | None = None
        if isinstance(raw, list):
            collections = tuple(str(c) for c in raw)
        raw_models = claims.get(self.config.models_claim)
        models = tuple(str(m) for m in raw_models) if isinstance(raw_models, list) else None
        subject = str(claims.get("sub", "unknown"))[:200]
        return Principal(
            subject=f"jwt:{subject}",
            role=role,
            collections=collections,
            models=models,
            via="jwt",
        )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")
