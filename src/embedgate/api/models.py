"""`GET /v1/models`: what is served, with its dimensions and token limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from embedgate.api.guard import requires
from embedgate.api.state import service
from embedgate.engine import EmbeddingEngine
from embedgate.identity import Permission
from embedgate.services import Services

router = APIRouter()


@router.get("/v1/models", dependencies=[requires(Permission.SEARCH)])
async def list_models(state: Services = Depends(service)) -> dict[str, Any]:
    default = state.require_engine()
    data = [_embedding_entry(default, default=True, ready=True)]
    for supervisor in state.embedders:
        if supervisor.engine is not None:  # still loading (or failed: /ready says why)
            ready = supervisor.not_ready_reason() is None
            data.append(_embedding_entry(supervisor.engine, default=False, ready=ready))
    for reranker_supervisor in state.rerankers:
        reranker = reranker_supervisor.engine
        if reranker is None:
            continue
        data.append(
            {
                "id": reranker.name,
                "object": "model",
                "created": 0,
                "owned_by": "embedgate",
                "aliases": list(reranker.aliases),
                "task": "rerank",
                "kind": reranker.spec.kind,  # qwen3 | cross-encoder
                "max_input_tokens": reranker.max_input_tokens,
                "ready": reranker_supervisor.not_ready_reason() is None,
            }
        )
    return {"object": "list", "data": data}


def _embedding_entry(engine: EmbeddingEngine, *, default: bool, ready: bool) -> dict[str, Any]:
    spec = engine.spec
    described = engine.describe()
    entry: dict[str, Any] = {
        "id": engine.name,
        "object": "model",
        "created": 0,
        "owned_by": "embedgate",
        "aliases": list(engine.aliases),
        "dimensions": spec.native_dimensions,
        "dimensions_range": [spec.min_dimensions, spec.native_dimensions],
        "max_input_tokens": engine.max_input_tokens,
        "pooling": spec.pooling,
        "family": spec.family,
        "task": "embed",
        "dtype": described.dtype,  # what the passes compute in (dtype=auto resolved)
        "runtime": described.runtime,
        "default": default,  # what a request that names no model (or an unknown one) gets
        "ready": ready,
    }
    if described.quantization is not None:  # a GGUF file
        entry["quantization"] = described.quantization
    if described.fingerprint is not None:  # gateway mode: what the upstreams serve
        entry["fingerprint"] = described.fingerprint
    return entry
