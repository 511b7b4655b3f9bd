"""The last hour of traffic, minute by minute, for the console's overview charts.

Prometheus is the place for long-term history, but a console on a server that nobody has
pointed Prometheus at should still show what happened in the last hour. So the metrics also
keep sixty one-minute buckets in memory: requests, embedded tokens, 4xx / 5xx answers, the
deepest queue seen and the latencies (for p50 / p95). A bucket holds at most
`LATENCY_SAMPLES` latencies (a reservoir), so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MINUTES = 60
LATENCY_SAMPLES = 2048


@dataclass
class _Minute:
    start: int  # unix minute
    requests: int = 0
    tokens: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    queue_max: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered to the reservoir

    def sample(self, seconds: float) -> None:
        self.seen += 1
        if len(self.latencies) < LATENCY_SAMPLES:
            self.latencies.append(seconds)
        else:  # reservoir sampling: every latency of the minute equally likely to be kept
            slot = random.randrange(self.seen)  # noqa: S311 - sampling, not secrets
            if slot < LATENCY_SAMPLES:
                self.latencies[slot] = seconds

    def view(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "t": self.start * 60,
            "requests": self.requests,
            "tokens": self.tokens,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "queue_max": self.queue_max,
            "p50_ms": _quantile_ms(ordered, 0.50),
            "p95_ms": _quantile_ms(ordered, 0.95),
        }


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


class RecentTraffic:
    """Thread-safe: requests end on the event loop, queue changes on forward threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._minutes: deque[_Minute] = deque(maxlen=MINUTES)
        self.started = clock()

    def _current(self) -> _Minute:
        minute = int(self._clock() // 60)
        if not self._minutes or self._minutes[-1].start != minute:
            self._minutes.append(_Minute(minute))
        return self._minutes[-1]

    def request(self, status: int, seconds: float) -> None:
        with self._lock:
            bucket = self._current()
            bucket.requests += 1
            if 400 <= status < 500:
                bucket.errors_4xx += 1
            elif status >= 500:
                bucket.errors_5xx += 1
            bucket.sample(seconds)

    def tokens(self, count: int) -> None:
        with self._lock:
            self._current().tokens += count

    def queue(self, items: int) -> None:
        with self._lock:
            bucket = self._current()
            bucket.queue_max = max(bucket.queue_max, items)

    def series(self) -> list[dict[str, Any]]:
        """The last hour, oldest first, one entry per minute (quiet minutes included, so a
        chart's x axis is time)."""
        with self._lock:
            now = int(self._clock() // 60)
            kept = {m.start: m for m in self._minutes}
            return [
                (kept.get(start) or _Minute(start)).view()
                for start in range(now - MINUTES + 1, now + 1)
            ]

    def uptime_s(self) -> float:
        return max(0.0, self._clock() - self.started)
