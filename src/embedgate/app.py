"""`create_app(settings)`: the HTTP surface over one `Services` (the composition root).

Nothing happens at import time. The lifespan opens the services, which load the model on a
worker thread (so /health answers while a large model loads) and turn /ready green only
after the self-test; leaving the lifespan closes everything they opened, in reverse.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from embedgate import __version__
from embedgate.api import admin, health, introspection, knowledge, models, rerank
from embedgate.api.embeddings import PATH as EMBEDDINGS_PATH
from embedgate.api.embeddings import EmbeddingsEndpoint
from embedgate.api.errors import install_error_handlers
from embedgate.api.guard import CONSOLE_PREFIX, requires, unguarded_routes
from embedgate.api.hot_routes import HotRoutes
from embedgate.api.middleware import AccessLogStep, AuditStep, RequestIdStep, SizeLimitStep
from embedgate.api.openapi import openapi_document
from embedgate.config import Settings
from embedgate.identity import Permission
from embedgate.knowledge.vector_store import VectorStore
from embedgate.security.audit import AuditSink
from embedgate.services import EngineFactory, Overrides, Services
from embedgate.storage.key_store import KeyStore
from embedgate.web.console import console_routes

if TYPE_CHECKING:  # FastAPI < 0.16x has no telemetry module; nothing to switch off there
    from fastapi.telemetry import TelemetryConfig

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
    *,
    key_store: KeyStore | None = None,
    audit_sink: AuditSink | None = None,
    vector_store: VectorStore | None = None,
) -> FastAPI:
    """Build the ASGI app over one `Services`, opened by the lifespan. The optional
    boundaries swap in fakes: `engine_factory` (model backend), `key_store`, `audit_sink` and
    `vector_store`; by default they are the real ones from settings."""
    services = Services(settings=settings)
    overrides = Overrides(
        engine_factory=engine_factory,
        key_store=key_store,
        audit_sink=audit_sink,
        vector_store=vector_store,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with services.open(overrides=overrides, model="background", first_admin_key=True):
            yield

    app = FastAPI(
        title="embedgate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    # no redirects: /v1/models/ would answer 307 with a Location built from the Host header,
    # before authentication, and a 307 makes clients send the text again; it is a 404
    app.router.redirect_slashes = False
    app.state.embedgate = services
    install_error_handlers(app)
    embeddings = Route(
        EMBEDDINGS_PATH, EmbeddingsEndpoint(services), methods=["POST"], name="create_embeddings"
    )
    app.router.routes.append(embeddings)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(rerank.router)
    app.include_router(knowledge.router)
    app.include_router(admin.router)
    app.include_router(introspection.router)
    if settings.console:
        app.router.routes.extend(console_routes(CONSOLE_PREFIX))
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
    # added innermost first: a request meets RequestIdStep first and SizeLimitStep last
    app.add_middleware(
        SizeLimitStep,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.kb_max_upload_bytes + 64 * 1024,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(AuditStep, audit=lambda: services.audit)
    app.add_middleware(AccessLogStep, metrics=services.metrics)
    app.add_middleware(RequestIdStep)
    return app
