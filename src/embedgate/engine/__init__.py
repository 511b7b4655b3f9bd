"""The inference engine: model loading, tokenisation, pooling and dynamic batching.

It takes its own `EngineConfig`, never the server's settings, and knows nothing above it.
"""

from __future__ import annotations

from embedgate.engine.config import EngineConfig
from embedgate.engine.engine import EmbeddingEngine, Embeddings, EmbedRequest
from embedgate.engine.factory import load_engine, load_reranker, thread_plan
from embedgate.engine.reranking import RerankEngine, RerankRequest, Scores
from embedgate.engine.submission import EngineLimits

__all__ = [
    "EmbedRequest",
    "EmbeddingEngine",
    "Embeddings",
    "EngineConfig",
    "EngineLimits",
    "RerankEngine",
    "RerankRequest",
    "Scores",
    "load_engine",
    "load_reranker",
    "thread_plan",
]
