"""`create_app(settings)`: the only place the service is assembled.

Nothing happens at import time. The lifespan loads the model on a worker thread (so /health
answers while a large model loads), runs the self-test, and only then turns /ready green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from embedgate import __version__
from embedgate.api import admin, health, knowledge, models
from embedgate.api.embeddings import PATH as EMBEDDINGS_PATH
from embedgate.api.embeddings import EmbeddingsEndpoint
from embedgate.api.errors import install_error_handlers
from embedgate.api.hot_routes import HotRoutes
from embedgate.api.metrics import Metrics
from embedgate.api.middleware import RequestContextMiddleware
from embedgate.api.openapi import openapi_document
from embedgate.api.state import ServiceState
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, build_engine
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.selftest import run_self_test
from embedgate.knowledge.setup import build_knowledge
from embedgate.knowledge.vector_store import VectorStore
from embedgate.security.audit import AuditSink
from embedgate.security.gate import requires, unguarded_routes
from embedgate.security.roles import Permission
from embedgate.security.setup import build_security, open_settings_database
from embedgate.storage.key_store import KeyStore

if TYPE_CHECKING:  # FastAPI < 0.16x has no telemetry module; nothing to switch off there
    from fastapi.telemetry import TelemetryConfig

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
    state.metrics.watch_backend(engine.backend)
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


async def _flush_last_used(state: ServiceState, every: float = 30.0) -> None:
    """Key last-used times are buffered off the hot path and written periodically."""
    while True:
        await asyncio.sleep(every)
        if state.keys is not None:
            try:
                await asyncio.to_thread(state.keys.flush_last_used)
            except Exception:
                log.warning("could not record key last-used times", exc_info=True)


# FastAPI (0.16x) instruments itself with OpenTelemetry as soon as the process has a configured
# provider or FASTAPI_OTEL_AUTO_CONFIGURE=true: request spans, metrics, and logs of validation
# failures and exceptions, whose messages can quote the caller's input. A host-wide variable
# must not start shipping our callers' data to a collector, so all of it is off; /metrics and
# the audit log are the product's own observability. (Older FastAPI keeps this as `extra`.)
NO_FASTAPI_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def create_app(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    key_store: KeyStore | None = None,
    audit_sink: AuditSink | None = None,
    vector_store: VectorStore | None = None,
) -> FastAPI:
    """Build the ASGI app. The optional boundaries swap in fakes: `engine_factory` (model
    backend), `key_store`, `audit_sink` and `vector_store`; by default they are the real ones
    from settings."""
    metrics = Metrics()
    state = ServiceState(settings=settings, metrics=metrics)
    metrics.ready.set_function(lambda: float(state.not_ready_reason() is None))
    factory: EngineFactory = engine_factory or build_engine

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        database = await asyncio.to_thread(open_settings_database, settings)
        parts = await asyncio.to_thread(build_security, settings, key_store, audit_sink, database)
        state.security, state.audit, state.keys = parts.security, parts.audit, parts.keys
        try:
            state.knowledge = await asyncio.to_thread(
                build_knowledge, settings, database, state.ready_engine, vector_store
            )
            state.knowledge.runner.start()
            await asyncio.to_thread(state.knowledge.runner.recover)
        except Exception as exc:  # embeddings keep working without the knowledge base
            state.knowledge_error = f"{type(exc).__name__}: {exc}"
            log.error("knowledge base unavailable", extra={"reason": state.knowledge_error})
        loader = asyncio.create_task(_bring_up(state, factory))
        flusher = asyncio.create_task(_flush_last_used(state))
        try:
            yield
        finally:
            for task in (loader, flusher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.ready = False
            if state.knowledge is not None:
                state.knowledge.runner.stop()
            if state.engine is not None:
                state.engine.stop()
            with contextlib.suppress(Exception):
                state.keys.flush_last_used()
            with contextlib.suppress(Exception):
                await parts.security.limiter.aclose()

    app = FastAPI(
        title="embedgate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.embedgate = state
    install_error_handlers(app)
    embeddings = Route(
        EMBEDDINGS_PATH, EmbeddingsEndpoint(state), methods=["POST"], name="create_embeddings"
    )
    app.router.routes.append(embeddings)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(knowledge.router)
    app.include_router(admin.router)
    if settings.api_docs == "admin":

        @app.get("/openapi.json", dependencies=[requires(Permission.ADMIN)])
        async def openapi_schema() -> JSONResponse:
            return JSONResponse(openapi_document(app))

    unguarded = unguarded_routes(app.routes)
    if unguarded:  # deny by default: a route without a permission is a bug, not a feature
        raise RuntimeError(f"routes without a permission guard: {unguarded}")
    app.add_middleware(HotRoutes, routes=[embeddings])  # innermost: CORS and context wrap it
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "x-api-key", "content-type"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.kb_max_upload_bytes + 64 * 1024,
        max_header_bytes=settings.max_header_bytes,
        state=state,
    )
    return app
