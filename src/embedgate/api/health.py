"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from embedgate.api.guard import requires
from embedgate.api.state import service
from embedgate.identity import Permission
from embedgate.services import Services

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving HTTP (says nothing about the model)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: Services = Depends(service)) -> Response:
    """Green after the default embedding model loaded and passed its self-test, and while
    its process and the stores are up. Other models (rerankers) load and fail on their own,
    never taking the server out of rotation; `models` says which are ready."""
    reason = state.not_ready_reason()
    models = state.model_states()  # every served model: "ready" or why not
    if reason is None:
        return JSONResponse(
            {
                "status": "ready",
                "model": state.engine.name if state.engine else None,
                "models": models,
            }
        )
    return JSONResponse(
        {"status": "not_ready", "reason": reason, "models": models}, status_code=503
    )


@router.get("/metrics", dependencies=[requires(Permission.METRICS)])
async def metrics(state: Services = Depends(service)) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
