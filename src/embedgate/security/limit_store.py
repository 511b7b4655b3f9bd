"""The rate-limit store boundary: sliding-window counters charged all-or-nothing.

A request can be subject to several limits at once (requests/min and tokens/min of one key).
The store checks every window and charges all of them only when all allow it, in one step, so
an embedding request costs one round trip to a shared store rather than one per limit, and a
request refused on tokens does not use up a request slot.

The counter is the sliding-window approximation used by Cloudflare and the `limits` library:
fixed one-minute windows, with the previous window's count weighted by how much of it still
overlaps the last minute. `slide` is the whole algorithm; `MemoryLimitStore` runs it in-process
and `RedisLimitStore` (redis_limit_store.py) runs the same steps in a Lua script.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

WINDOW_SECONDS = 60.0
_MAX_MEMORY_KEYS = 100_000


@dataclass(frozen=True)
class Charge:
    """`cost` units against `limit` per minute on the counter named `key`."""

    key: str
    limit: int
    cost: int = 1


@dataclass(frozen=True)
class WindowState:
    """One counter after a charge (or the attempt): what the rate-limit headers report."""

    allowed: bool
    remaining: int
    reset_seconds: float  # until the counter is back to its full allowance
    retry_seconds: float  # until this charge would fit (0 when allowed; inf when never)


@dataclass
class Counter:
    window: int  # index of the current fixed window
    current: int
    previous: int


def slide(
    counter: Counter | None, now: float, charge: Charge, width: float = WINDOW_SECONDS
) -> tuple[Counter, WindowState]:
    """The counter as of `now` with `charge` added, and whether the charge fits.

    The returned counter includes the charge; the caller stores it only when every charge of
    the request fits.
    """
    index = math.floor(now / width)
    into = (now - index * width) / width  # fraction of the current window gone by
    current = previous = 0
    if counter is not None:
        if counter.window >= index:  # same window (or a clock a little behind the store's)
            current, previous = counter.current, counter.previous
        elif counter.window == index - 1:
            previous = counter.current
    used = previous * (1.0 - into) + current
    allowed = used + charge.cost <= charge.limit
    if allowed:
        current += charge.cost
        used += charge.cost
    remaining = max(0, math.floor(charge.limit - used))
    if current > 0:
        reset = (index + 2) * width - now
    elif previous > 0:
        reset = (index + 1) * width - now
    else:
        reset = 0.0
    retry = 0.0 if allowed else _retry_after(charge, current, previous, into, width)
    return Counter(index, current, previous), WindowState(allowed, remaining, reset, retry)


def _retry_after(charge: Charge, current: int, previous: int, into: float, width: float) -> float:
    """Seconds until `charge` fits if nothing else is charged meanwhile."""
    if charge.cost > charge.limit:
        return math.inf
    room = charge.limit - charge.cost - current
    if room >= 0 and previous > 0:  # fits later in this window, as the previous one fades
        fits_at = 1.0 - room / previous
        return max(fits_at - into, 0.0) * width
    # wait for the next window, where the current count fades the same way
    fade = 1.0 - (charge.limit - charge.cost) / current if current > 0 else 0.0
    return (1.0 - into + max(fade, 0.0)) * width


class LimitStore(Protocol):
    """Where the counters live: this process, or Redis shared by every replica."""

    async def charge(self, charges: Sequence[Charge]) -> list[WindowState]:
        """Check every counter; charge them all only when every one allows it."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimitStore:
    """Counters in this process: the default without Redis, the fallback in `local` mode, and
    the fake the tests use. The clock is injectable so tests can move time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, Counter] = {}
        self._lock = threading.Lock()

    async def charge(self, charges: Sequence[Charge]) -> list[WindowState]:
        with self._lock:
            now = self._clock()
            results = [slide(self._counters.get(c.key), now, c) for c in charges]
            if all(state.allowed for _, state in results):
                if len(self._counters) > _MAX_MEMORY_KEYS:
                    self._forget_idle(now)
                for c, (counter, _) in zip(charges, results, strict=True):
                    self._counters[c.key] = counter
            return [state for _, state in results]

    def _forget_idle(self, now: float) -> None:
        """Counters untouched for two windows are all zero; drop them to bound memory."""
        index = math.floor(now / WINDOW_SECONDS)
        self._counters = {k: c for k, c in self._counters.items() if c.window >= index - 1}

    async def aclose(self) -> None:
        return None
