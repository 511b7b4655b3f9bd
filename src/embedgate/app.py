"""`create_app(settings)`: the only place the service is assembled.

Nothing happens at import time. The lifespan loads the model on a worker thread (so /health
answers while a large model loads), runs the self-test, and only then turns /ready green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from embedgate import __version__
from embedgate.api import embeddings, health, models
from embedgate.api.errors import install_error_handlers
from embedgate.api.metrics import Metrics
from embedgate.api.middleware import RequestContextMiddleware
from embedgate.api.state import ServiceState
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, build_engine
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.selftest import run_self_test

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, SchedulerObserver], EmbeddingEngine]


async def _bring_up(state: ServiceState, factory: EngineFactory) -> None:
    try:
        engine = await asyncio.to_thread(factory, state.settings, state.metrics)
    except Exception as exc:
        state.reason = f"loading the model failed: {exc}"
        log.error("model load failed", extra={"reason": state.reason})
        return
    engine.start()
    state.engine = engine
    log.info(
        "model loaded",
        extra={
            "model": engine.name,
            "family": engine.spec.family,
            "dtype": engine.backend.dtype_name,
            "device": engine.backend.device_name,
            "dimensions": engine.spec.native_dimensions,
            "max_input_tokens": engine.max_input_tokens,
        },
    )
    if state.settings.self_test:
        state.reason = "running the self-test"
        result = await asyncio.to_thread(run_self_test, engine)
        if not result.ok:
            state.reason = f"self-test failed: {result.reason}"
            log.error("self-test failed; staying not-ready", extra={"reason": result.reason})
            return
        log.info("self-test passed", extra={"detail": result.reason})
    state.ready = True
    state.reason = "ready"
    state.metrics.ready.set(1)


def create_app(settings: Settings, engine_factory: EngineFactory | None = None) -> FastAPI:
    """Build the ASGI app; `engine_factory` swaps the model backend (tests use the fake)."""
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)
    factory: EngineFactory = engine_factory or build_engine

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_bring_up(state, factory))
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            state.ready = False
            if state.engine is not None:
                state.engine.stop()

    app = FastAPI(
        title="embedgate",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.embedgate = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(embeddings.router)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes
    )
    return app
