"""Per-key requests/min and tokens/min, and failed-auth attempts per client IP.

Counters live in a `LimitStore`: in-process memory (one process) or Redis (shared by all
replicas, so limits do not multiply by the replica count). All the limits a request is subject
to are checked and charged in one store call. When Redis is unreachable the documented
`redis_failure_mode` decides: `fail_closed` answers 503, `local` falls back to per-process
counters and logs an error while it does so.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from embedgate.errors import ErrorKind, LimitKind, LimitStatus, ServiceError
from embedgate.security.limit_store import Charge, LimitStore, MemoryLimitStore, WindowState

log = logging.getLogger(__name__)

Kind = LimitKind
FailureMode = Literal["fail_closed", "local"]
_MAX_REFUSALS = 100_000


@dataclass(frozen=True)
class Limit:
    """`cost` units of `kind` against `per_minute`."""

    kind: Kind
    per_minute: int
    cost: int = 1


class RateLimiter:
    def __init__(
        self,
        store: LimitStore | None = None,
        failure_mode: FailureMode = "fail_closed",
        shared: bool = False,
    ) -> None:
        self.failure_mode = failure_mode
        self.shared = shared
        self._primary: LimitStore = store if store is not None else MemoryLimitStore()
        self._local = MemoryLimitStore()
        self._degraded_since: float | None = None
        # the shared store's last charge failed (metrics; it clears on the next that works)
        self.store_failing = False
        self._refused: dict[tuple[str, int], float] = {}

    @classmethod
    def for_redis(cls, url: str | None, failure_mode: FailureMode = "fail_closed") -> RateLimiter:
        if url is None:
            return cls()
        from embedgate.security.redis_limit_store import RedisLimitStore

        return cls(RedisLimitStore(url), failure_mode, shared=True)

    def refused_for(self, kind: Kind, ident: str, per_minute: int) -> float:
        """Seconds an earlier one-unit charge is still known not to fit (0: not refused).

        Answered in-process, so a caller over its request limit (or an address locked out
        after failed logins) is refused before any work or store round trip. Only one-unit
        charges are remembered: the wait the store computed for them is exact, and other
        replicas' traffic can only lengthen it. Keyed by the limit, so raising it takes effect.
        """
        key = (f"{kind}:{ident}", per_minute)
        until = self._refused.get(key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            self._refused.pop(key, None)
            return 0.0
        return left

    def _remember_refusal(self, key: tuple[str, int], seconds: float) -> None:
        if len(self._refused) > _MAX_REFUSALS:  # bound memory under an address-spraying attack
            self._refused.clear()
        self._refused[key] = time.monotonic() + seconds

    async def hit(self, kind: Kind, ident: str, per_minute: int, cost: int = 1) -> LimitStatus:
        """Charge one limit; raises 429 (or 503 when the store is down and fail_closed)."""
        return (await self.charge(ident, [Limit(kind, per_minute, cost)]))[0]

    def raise_if_refused(self, kind: Kind, ident: str, per_minute: int) -> None:
        """429 at once when a one-unit charge is already known not to fit (`refused_for`)."""
        wait = self.refused_for(kind, ident, per_minute)
        if wait > 0:
            raise self._refusal(kind, per_minute, 1, retry_after_s=wait)

    async def charge(self, ident: str, limits: Sequence[Limit]) -> list[LimitStatus]:
        """Charge every limit or none (one store call); raises 429 naming the first refusal."""
        for limit in limits:
            if limit.cost == 1:
                self.raise_if_refused(limit.kind, ident, limit.per_minute)
        charges = [Charge(f"{lim.kind}:{ident}", lim.per_minute, lim.cost) for lim in limits]
        states = await self._charge(charges)
        statuses = [
            LimitStatus(lim.kind, lim.per_minute, state.remaining, state.reset_seconds)
            for lim, state in zip(limits, states, strict=True)
        ]
        for lim, state, status in zip(limits, states, statuses, strict=True):
            if not state.allowed:
                raise self._refused_with(lim, ident, state, status)
        return statuses

    def _refused_with(
        self, limit: Limit, ident: str, state: WindowState, status: LimitStatus
    ) -> ServiceError:
        retry = state.retry_seconds if math.isfinite(state.retry_seconds) else 60.0
        retry = max(retry, 0.001)
        if limit.cost == 1:
            self._remember_refusal((f"{limit.kind}:{ident}", limit.per_minute), retry)
        return self._refusal(
            limit.kind, limit.per_minute, limit.cost, retry_after_s=retry, limits=(status,)
        )

    async def _charge(self, charges: list[Charge]) -> list[WindowState]:
        try:
            states = await self._primary.charge(charges)
        except Exception as exc:
            if not self.shared:
                raise
            self.store_failing = True
            if self.failure_mode == "fail_closed":
                log.error(
                    "rate-limit store unreachable; refusing requests (fail_closed)",
                    extra={"error": type(exc).__name__},
                )
                raise ServiceError(
                    ErrorKind.LIMITS_UNAVAILABLE,
                    "rate limits cannot be checked right now (limit store unreachable); retry",
                    retry_after_s=1.0,
                ) from None
            if self._degraded_since is None:
                self._degraded_since = time.monotonic()
            log.error(
                "rate-limit store unreachable; using per-process limits (local mode): limits "
                "now multiply by the number of replicas",
                extra={"error": type(exc).__name__},
            )
            return await self._local.charge(charges)
        self.store_failing = False
        if self._degraded_since is not None:
            log.warning("rate-limit store reachable again; shared limits restored")
            self._degraded_since = None
        return states

    async def aclose(self) -> None:
        await self._primary.aclose()

    @staticmethod
    def _refusal(
        kind: Kind,
        limit: int,
        cost: int,
        *,
        retry_after_s: float,
        limits: tuple[LimitStatus, ...] = (),
    ) -> ServiceError:
        if kind == "tokens":
            detail = f"this request needs {cost} tokens; the key's limit is {limit} tokens/min"
            return ServiceError(
                ErrorKind.RATE_LIMITED_TOKENS,
                f"Rate limit reached for tokens: {detail}",
                retry_after_s=retry_after_s,
                limits=limits,
            )
        if kind == "auth":
            return ServiceError(
                ErrorKind.RATE_LIMITED_REQUESTS,
                "too many failed authentication attempts from this address; wait and retry",
                retry_after_s=retry_after_s,
                limits=limits,
            )
        return ServiceError(
            ErrorKind.RATE_LIMITED_REQUESTS,
            f"Rate limit reached for requests: {limit} requests/min for this key",
            retry_after_s=retry_after_s,
            limits=limits,
        )
