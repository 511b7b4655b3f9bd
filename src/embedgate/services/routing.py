"""Which served model a request gets: the embedding models (the default first) and the
rerankers by name or alias, ready now and granted to the caller's key, or the one clear error
that says why not. A part of `Services` (it reads the supervisors `Services` builds)."""

from __future__ import annotations

from typing import TypeVar

from embedgate.engine import EmbeddingEngine, RerankEngine
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Principal
from embedgate.services.model import ModelSupervisor


class ModelRouting:
    model: ModelSupervisor[EmbeddingEngine]  # the default model
    embedders: list[ModelSupervisor[EmbeddingEngine]]  # served beside it
    rerankers: list[ModelSupervisor[RerankEngine]]

    def not_ready_reason(self) -> str | None:
        """Why the server cannot take requests now (`Services` says: storage, audit...)."""
        raise NotImplementedError

    def embedding_models(self) -> list[ModelSupervisor[EmbeddingEngine]]:
        """The default embedding model first, then those served beside it."""
        return [self.model, *self.embedders]

    def require_engine_for(
        self, model: str | None, principal: Principal | None = None
    ) -> EmbeddingEngine:
        """The embedding model a request names (the default when it names none), ready now
        and one the caller's key may use; or a 503 while it loads or restarts, a 400 naming
        a reranker, a 404 for a name no model here answers to, a 403 for a model the key is
        not granted."""
        if model is None:
            return _granted(principal, self.model.require())
        for supervisor in self.embedding_models():
            engine = supervisor.engine
            if engine is not None and engine.serves(model):
                return _granted(principal, supervisor.require())
        for supervisor in self.embedding_models():
            if supervisor.engine is None:  # still loading: it may be the one named
                return supervisor.require_for(model)
        if any(r.engine and r.engine.serves(model) for r in self.rerankers):
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                f"{model!r} is a reranker; embeddings come from {self.embedding_names()} "
                "(POST /v1/rerank scores documents with it)",
                "model",
            )
        raise ServiceError(
            ErrorKind.MODEL_NOT_FOUND,
            f"The model {model!r} does not exist here; this server embeds with "
            f"{self.embedding_names()} (see GET /v1/models)",
            "model",
        )

    def ready_engine_for(self, model: str) -> EmbeddingEngine | None:
        """For background work (ingest): the engine serving `model` while it and the server
        can take work now, None while they cannot yet; a ServiceError (`model_not_found`)
        once every model has loaded and none answers to the name."""
        if self.not_ready_reason() is not None:
            return None
        loading = False
        for supervisor in self.embedding_models():
            engine = supervisor.engine
            if engine is None:
                loading = True
            elif engine.serves(model):
                return engine if supervisor.not_ready_reason() is None else None
        if loading:
            return None
        raise ServiceError(
            ErrorKind.MODEL_NOT_FOUND,
            f"{model!r} is not served here (this server embeds with {self.embedding_names()})",
            "model",
        )

    def embedding_names(self) -> list[str]:
        return [s.engine.name for s in self.embedding_models() if s.engine is not None]

    def require_reranker_for(
        self, model: str | None, principal: Principal | None = None
    ) -> RerankEngine:
        """The reranker a request names (the first served one when it names none), or a
        clear 4xx: no reranker served, an embedding model named, an unknown name, a model
        the caller's key is not granted."""
        if not self.rerankers:
            raise ServiceError(
                ErrorKind.MODEL_NOT_FOUND,
                "this server serves no reranker; start it with a second --model naming a "
                "cross-encoder or Qwen3-Reranker directory (see GET /v1/models)",
                "model",
            )
        if model is None:
            return _granted(principal, self.rerankers[0].require())
        for supervisor in self.rerankers:
            engine = supervisor.engine
            if engine is not None and engine.serves(model):
                return _granted(principal, supervisor.require())
        if any(s.engine and s.engine.serves(model) for s in self.embedding_models()):
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                f"{model!r} is an embedding model; rerank with one of "
                f"{self.reranker_names()} (POST /v1/embeddings embeds with it)",
                "model",
            )
        raise ServiceError(
            ErrorKind.MODEL_NOT_FOUND,
            f"The reranker {model!r} does not exist here; this server reranks with "
            f"{self.reranker_names()} (see GET /v1/models)",
            "model",
        )

    def reranker_names(self) -> list[str]:
        return [s.engine.name for s in self.rerankers if s.engine is not None]

    def model_states(self) -> dict[str, str]:
        """Each served model's readiness ("ready" or why not), for /ready's body."""
        supervisors: list[ModelSupervisor[EmbeddingEngine] | ModelSupervisor[RerankEngine]]
        supervisors = [*self.embedding_models(), *self.rerankers]
        return {
            (s.engine.name if s.engine is not None else s.name): s.not_ready_reason() or "ready"
            for s in supervisors
        }


Served = TypeVar("Served", EmbeddingEngine, RerankEngine)


def _granted(principal: Principal | None, engine: Served) -> Served:
    """The engine, when the caller's key may use its model (keys limited to named models)."""
    if principal is not None and not principal.may_use((engine.name, *engine.aliases)):
        raise ServiceError(
            ErrorKind.FORBIDDEN,
            f"this key may not use the model {engine.name!r} (it is limited to "
            f"{list(principal.models or ())})",
            "model",
        )
    return engine
