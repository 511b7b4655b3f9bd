"""What the routes share, built by `create_app` and filled in by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from embedgate.api.metrics import Metrics
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.base import KnowledgeBase
from embedgate.security.audit import AuditLog
from embedgate.security.gate import Security
from embedgate.security.key_service import KeyService


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    engine: EmbeddingEngine | None = None
    security: Security | None = None
    audit: AuditLog | None = None
    keys: KeyService | None = None
    knowledge: KnowledgeBase | None = None
    knowledge_error: str = "starting"
    ready: bool = False
    reason: str = "loading the model"

    def not_ready_reason(self) -> str | None:
        """None when requests can be served now: the model passed its self-test and its
        process (if it has one) is up, not being replaced after a crash."""
        if not self.ready:
            return self.reason
        return self.engine.backend.unavailable if self.engine is not None else None

    def ready_engine(self) -> EmbeddingEngine | None:
        return self.engine if self.ready else None

    def require_knowledge(self) -> KnowledgeBase:
        if self.knowledge is None:
            raise ServiceError(
                ErrorKind.NOT_READY,
                f"the knowledge base is not available ({self.knowledge_error}); check the "
                "vector store (milvus_uri) and the server log",
            )
        return self.knowledge

    def require_engine(self) -> EmbeddingEngine:
        if self.engine is None or not self.ready:
            raise ServiceError(ErrorKind.NOT_READY, f"the model is not ready: {self.reason}")
        return self.engine


def audit_fields(request: Request) -> dict[str, object]:
    """Per-request fields for the audit record (counts only, never input text)."""
    fields: dict[str, object] = request.scope.setdefault("state", {}).setdefault("audit", {})
    return fields


async def service(request: Request) -> ServiceState:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    state: ServiceState = request.app.state.embedgate
    return state
