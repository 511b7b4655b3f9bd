"""An upstream pool on an event loop of its own, for the gateway backends' forward threads.

The engine's forward threads are plain threads; the pool is asyncio (many calls in flight,
one client's connection pool). `UpstreamRunner` runs the pool on a daemon loop thread,
probes every upstream every `health_interval_s` whether or not traffic flows (so readiness
follows the upstreams within about one interval), and turns the pool's refusals into what
the engine understands: no upstream is `ModelUnavailable` (503 + Retry-After), an upstream
refusing an input is `InputRefused` (the engine finds which input).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from embedgate.engine.backend import BackendHealth, InputRefused, ModelUnavailable
from embedgate.engine.backends.gateway.upstream import UpstreamPool
from embedgate.engine.backends.gateway.wire import Wire
from embedgate.engine.config import UpstreamConfig
from embedgate.errors import ErrorKind, ServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)


class UpstreamRunner:
    def __init__(
        self,
        upstreams: Sequence[UpstreamConfig],
        *,
        wire: Wire,
        dimensions: int | None,
        deadline_s: float = 60.0,
        health_interval_s: float = 5.0,
    ) -> None:
        self.deadline_s = deadline_s  # one pass, retries included; then 503
        self.health_interval_s = health_interval_s  # every upstream is probed this often
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="embedgate-upstreams", daemon=True
        )
        self._thread.start()
        self.pool = self._run(self._open(list(upstreams), wire, dimensions))
        self._prober = asyncio.run_coroutine_threadsafe(self._check_forever(), self._loop)

    async def _open(
        self, upstreams: list[UpstreamConfig], wire: Wire, dimensions: int | None
    ) -> UpstreamPool:
        """The pool, every upstream probed once: a gateway starts serving a known model."""
        pool = UpstreamPool(
            upstreams,
            dimensions=dimensions,
            wire=wire,
            probe_timeout_s=max(1.0, self.health_interval_s),
        )
        await pool.probe_due()
        return pool

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.pool.check_health()
            except Exception:  # never let one bad round end the checks
                log.exception("upstream health check failed")

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the upstreams' event loop, from any thread, and wait."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def call(self, items: list[Any]) -> np.ndarray:
        """The pool's answer rows for `items`, or the engine's errors."""
        try:
            return self._run(self.pool.run(items, deadline_s=self.deadline_s))
        except ServiceError as exc:
            if exc.kind is ErrorKind.MODEL_UNAVAILABLE:  # no upstream: 503 + Retry-After
                raise ModelUnavailable(exc.message, self.health_interval_s) from None
            raise InputRefused(exc) from None  # an upstream refused an input: find which

    def health(self) -> BackendHealth:
        return BackendHealth(
            unavailable=None if self.pool.healthy() else self.pool.why_none(),
            ready_in_s=self.health_interval_s,
            upstreams=tuple(self.pool.stats()),
        )

    def close(self) -> None:
        self._prober.cancel()
        self._run(self.pool.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
