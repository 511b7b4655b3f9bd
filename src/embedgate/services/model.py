"""`ModelSupervisor`: one served model's life in the server.

It loads the model on a worker thread (so /health answers while a large model loads), starts
it, runs the self-test, and only then calls it ready. While serving it watches the backend:
a model process that was replaced must pass the self-test again before the model counts as
ready, and when restarts were given up it asks the server to exit for its own supervisor
(systemd, Kubernetes) to start a fresh one. Surfaces ask it for the engine and get a 503
with a Retry-After, never a half-working model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from embedgate.engine import EmbeddingEngine, EngineConfig
from embedgate.engine.backend import BackendDescription, BackendHealth
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.selftest import SelfTestResult
from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger("embedgate.app")


class ServedEngine(Protocol):
    """What the supervisor needs of an engine: the embedding and the rerank engine both."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def describe(self) -> BackendDescription: ...
    def health(self) -> BackendHealth: ...
    def serves(self, model: str | None) -> bool: ...

    @property
    def max_input_tokens(self) -> int: ...


E = TypeVar("E", bound=ServedEngine)

EngineFactory = Callable[[EngineConfig, SchedulerObserver], EmbeddingEngine]


class ModelSupervisor(Generic[E]):
    """Load, self-test, readiness, restarts and the fatal exit for one model."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        name: str,
        observer: SchedulerObserver,
        check: Callable[[E], SelfTestResult],
        task: str = "embed",
        self_test: bool = True,
    ) -> None:
        self.config = config
        self.name = name  # what it is served as (its metrics' label), known before it loads
        self.observer = observer
        self.check = check  # the task's self-test (vectors or scores)
        self.task = task
        self.self_test = self_test
        self.engine: E | None = None
        self.ready = False  # loaded, started and self-tested
        self.reason = "loading the model"
        self.self_tested_restarts = 0  # the model process restarts whose successor passed
        self.fatal: str | None = None
        # called with a one-line reason when the server must exit for its supervisor to
        # restart it (model restarts given up); the server sets it, tests may too
        self.on_fatal: Callable[[str], None] | None = None

    # --- what the surfaces ask ---------------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        """None when the model can take a request now: loaded and self-tested, its process
        (if it has one) up, not being replaced, and a replacement self-tested again."""
        if not self.ready or self.engine is None:
            return self.reason
        health = self.engine.health()
        unavailable = health.gave_up or health.unavailable
        if unavailable is not None:
            return unavailable
        if health.restarts != self.self_tested_restarts:
            return "the model process was restarted; running the self-test"
        return None

    def require(self) -> E:
        """The engine, or 503: `not_ready` while it first loads, `model_unavailable` with a
        Retry-After while its process is being replaced."""
        if self.engine is None or not self.ready:
            raise ServiceError(ErrorKind.NOT_READY, f"the model is not ready: {self.reason}")
        reason = self.not_ready_reason()
        if reason is not None:
            raise ServiceError(
                ErrorKind.MODEL_UNAVAILABLE,
                f"the model is not available right now: {reason}; retry shortly",
                retry_after_s=self.engine.health().ready_in_s,
            )
        return self.engine

    def require_for(self, model: str | None) -> E:
        """`require`, and a 404 naming the served model when a request names another."""
        engine = self.require()
        if not engine.serves(model):
            raise ServiceError(
                ErrorKind.MODEL_NOT_FOUND,
                f"The model {model!r} does not exist here; this server serves "
                f"{engine.name!r} (see GET /v1/models)",
                "model",
            )
        return engine

    # --- lifecycle ---------------------------------------------------------------------------
    async def bring_up(self, factory: Callable[[EngineConfig, SchedulerObserver], E]) -> None:
        """Load, start, wait for the backend (gateway: an upstream), self-test, then ready."""
        try:
            engine = await asyncio.to_thread(factory, self.config, self.observer)
        except Exception as exc:
            self.reason = f"loading the model failed: {exc}"
            log.error("model load failed", extra={"reason": self.reason})
            return
        engine.start()
        self.engine = engine
        described = engine.describe()
        log.info(
            "model loaded",
            extra={
                "model": engine.name,
                "task": self.task,
                "runtime": described.runtime,
                "dtype": described.dtype,
                "device": described.device,
                "max_input_tokens": engine.max_input_tokens,
            },
        )
        while (waiting := engine.health().unavailable) is not None:  # gateway: no upstream yet
            self.reason = waiting
            await asyncio.sleep(1.0)
        if self.self_test:
            self.reason = "running the self-test"
            result = await asyncio.to_thread(self.check, engine)
            if not result.ok:
                self.reason = f"self-test failed: {result.reason}"
                log.error("self-test failed; staying not-ready", extra={"reason": result.reason})
                return
            log.info("self-test passed", extra={"detail": result.reason})
        self.ready = True
        self.reason = "ready"

    async def watch(self, every: float = 0.2) -> None:
        """After the model process was replaced, run the self-test again before the model
        counts as ready; when restarts were given up, ask the server to exit."""
        while True:
            await asyncio.sleep(every)
            engine = self.engine
            if engine is None or not self.ready:
                continue
            health = engine.health()
            if health.gave_up is not None and self.fatal is None:
                self.fatal = health.gave_up
                log.critical("the model cannot be restarted; exiting", extra={"reason": self.fatal})
                if self.on_fatal is not None:
                    self.on_fatal(self.fatal)
                continue
            if health.restarts == self.self_tested_restarts or health.unavailable is not None:
                continue
            result = await asyncio.to_thread(self.check, engine)
            if result.ok:
                self.self_tested_restarts = health.restarts
                log.info(
                    "self-test passed after a model restart", extra={"restarts": health.restarts}
                )
            else:
                log.error("self-test failed after a model restart", extra={"reason": result.reason})

    async def stop(self) -> None:
        """Stop serving: not ready first, then the engine (its threads, its process)."""
        self.ready = False
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)
            self.engine = None
