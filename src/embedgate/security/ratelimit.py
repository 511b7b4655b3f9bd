"""Per-key requests/min and tokens/min, and failed-auth attempts per client IP.

The `limits` library's sliding-window counter, on in-process memory (one process) or Redis
(shared by all replicas, so limits do not multiply by the replica count). When Redis is
unreachable the documented `redis_failure_mode` decides: `fail_closed` answers 503, `local`
falls back to per-process counters and logs an error while it does so. Redis calls carry short
timeouts, so a dead Redis never hangs a request.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

Kind = Literal["requests", "tokens", "auth"]
FailureMode = Literal["fail_closed", "local"]
STATS_REFRESH_S = 1.0


@dataclass(frozen=True)
class LimitStatus:
    kind: Kind
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        if self.kind == "auth":
            return {}
        return {
            f"x-ratelimit-limit-{self.kind}": str(self.limit),
            f"x-ratelimit-remaining-{self.kind}": str(max(self.remaining, 0)),
            f"x-ratelimit-reset-{self.kind}": f"{max(self.reset_seconds, 0.0):.3f}s",
        }


def _redis_uri(url: str) -> str:
    for scheme in ("redis://", "rediss://", "unix://"):
        if url.startswith(scheme):
            return "async+" + url
    return url


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None = None,
        failure_mode: FailureMode = "fail_closed",
        prefix: str = "embedgate",
    ) -> None:
        self.failure_mode = failure_mode
        self.shared = redis_url is not None
        storage: Storage
        if redis_url is not None:
            storage = RedisStorage(
                _redis_uri(redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=prefix,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
        else:
            storage = MemoryStorage()
        self._primary = SlidingWindowCounterRateLimiter(storage)
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._degraded_since: float | None = None
        self._stats: dict[str, tuple[float, int, float]] = {}
        self._lockouts: dict[str, float] = {}

    async def _hit(
        self,
        limiter: SlidingWindowCounterRateLimiter,
        item: RateLimitItemPerMinute,
        ident: str,
        cost: int,
    ) -> tuple[bool, int, float]:
        """One round trip for the decision; window stats only when the estimate is stale.

        The decision is always exact (the store's atomic script). The `remaining` / `reset`
        figures for headers are re-read at most once a second per identity, or when the
        estimate gets near the limit, or on a refusal; in between they are counted down
        locally, which keeps a request at one store round trip per limit.
        """
        allowed = await limiter.hit(item, ident, cost=cost)
        now = time.time()
        cached = self._stats.get(ident)
        if (
            allowed
            and cached is not None
            and now - cached[0] < STATS_REFRESH_S
            and cached[1] - cost > item.amount * 0.1
        ):
            remaining = cached[1] - cost
            self._stats[ident] = (cached[0], remaining, cached[2])
            return allowed, remaining, cached[2] - now
        stats = await limiter.get_window_stats(item, ident)
        self._stats[ident] = (now, stats.remaining, stats.reset_time)
        return allowed, stats.remaining, stats.reset_time - now

    def locked_out(self, ident: str) -> bool:
        """Failed-auth lockouts are remembered in-process, so the check before every
        authentication costs no store round trip (counting failures still uses the store)."""
        until = self._lockouts.get(ident)
        if until is None:
            return False
        if time.monotonic() >= until:
            self._lockouts.pop(ident, None)
            return False
        return True

    def lock_out(self, ident: str, seconds: float) -> None:
        if len(self._lockouts) > 100_000:  # bound memory under an address-spraying attack
            self._lockouts.clear()
        self._lockouts[ident] = time.monotonic() + max(seconds, 1.0)

    async def hit(self, kind: Kind, ident: str, per_minute: int, cost: int = 1) -> LimitStatus:
        """Charge `cost`; raises 429 (or 503 when the store is down and fail_closed)."""
        item = RateLimitItemPerMinute(per_minute)
        key = f"{kind}:{ident}"
        if kind == "auth" and self.locked_out(key):
            raise self._refusal(kind, per_minute, cost, {"Retry-After": "60"})
        try:
            allowed, remaining, reset = await self._hit(self._primary, item, key, cost)
            if self._degraded_since is not None:
                log.warning("rate-limit store reachable again; shared limits restored")
                self._degraded_since = None
        except Exception as exc:
            if not self.shared:
                raise
            if self.failure_mode == "fail_closed":
                log.error(
                    "rate-limit store unreachable; refusing requests (fail_closed)",
                    extra={"error": type(exc).__name__},
                )
                raise ServiceError(
                    ErrorKind.LIMITS_UNAVAILABLE,
                    "rate limits cannot be checked right now (limit store unreachable); retry",
                    headers={"Retry-After": "1"},
                ) from None
            if self._degraded_since is None:
                self._degraded_since = time.monotonic()
            log.error(
                "rate-limit store unreachable; using per-process limits (local mode): limits "
                "now multiply by the number of replicas",
                extra={"error": type(exc).__name__},
            )
            allowed, remaining, reset = await self._hit(self._local, item, key, cost)
        status = LimitStatus(kind, per_minute, remaining, reset)
        if not allowed:
            retry = max(reset, 0.001)
            if kind == "auth":
                self.lock_out(key, retry)
            headers = {
                **status.headers(),
                "Retry-After": str(max(1, math.ceil(retry))),
                "retry-after-ms": str(max(1, math.ceil(retry * 1000))),
            }
            raise self._refusal(kind, per_minute, cost, headers)
        return status

    @staticmethod
    def _refusal(kind: Kind, limit: int, cost: int, headers: dict[str, str]) -> ServiceError:
        if kind == "tokens":
            detail = f"this request needs {cost} tokens; the key's limit is {limit} tokens/min"
            return ServiceError(
                ErrorKind.RATE_LIMITED_TOKENS,
                f"Rate limit reached for tokens: {detail}",
                headers=headers,
            )
        if kind == "auth":
            return ServiceError(
                ErrorKind.RATE_LIMITED_REQUESTS,
                "too many failed authentication attempts from this address; wait and retry",
                headers=headers,
            )
        return ServiceError(
            ErrorKind.RATE_LIMITED_REQUESTS,
            f"Rate limit reached for requests: {limit} requests/min for this key",
            headers=headers,
        )
