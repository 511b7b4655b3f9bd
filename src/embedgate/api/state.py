"""What the routes share, built by `create_app` and filled in by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from embedgate.api.metrics import Metrics
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine
from embedgate.errors import ErrorKind, ServiceError


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    engine: EmbeddingEngine | None = None
    ready: bool = False
    reason: str = "loading the model"

    def require_engine(self) -> EmbeddingEngine:
        if self.engine is None or not self.ready:
            raise ServiceError(ErrorKind.NOT_READY, f"the model is not ready: {self.reason}")
        return self.engine


async def service(request: Request) -> ServiceState:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    state: ServiceState = request.app.state.embedgate
    return state
