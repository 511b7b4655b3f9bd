"""Searching one collection: the query embedded with the collection's own model, the store
generation the catalog names searched (dense, lexical or hybrid), the hits of ready documents
with their file names, optionally rescored by a reranker.

A reindex may switch the collection to its next generation, perhaps with another model,
between reading the catalog and searching the store: the search then runs again on the new
generation with its model, so every answer comes from one model and one generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from embedgate.engine import EmbeddingEngine, EmbedRequest, RerankEngine, RerankRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Principal
from embedgate.knowledge.analysis import script_language
from embedgate.knowledge.coverage import check_same_model
from embedgate.knowledge.naming import generation_of, store_name_of
from embedgate.knowledge.vector_store import FusionWeights, Hit, VectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo

Mode = Literal["dense", "lexical", "hybrid"]

# Hybrid weights when the model cannot read the query's language (an English-only model and a
# Chinese query): its dense ranking is close to noise, so lexical leads. Measured with
# benchmarks/retrieval.py (docs/benchmarks.md): hybrid stays at or above lexical on Chinese.
UNCOVERED_DENSE_WEIGHT = 0.02


def fusion_for(
    *, query: str, covers: Callable[[str], bool], configured: dict[str, float] | None
) -> FusionWeights:
    """The request's or collection's weights when set; otherwise balanced, unless the model
    does not cover the query's language."""
    if configured:
        return FusionWeights(
            dense=float(configured.get("dense", 1.0)), lexical=float(configured.get("lexical", 1.0))
        )
    if not covers(script_language(query)):
        return FusionWeights(dense=UNCOVERED_DENSE_WEIGHT, lexical=1.0)
    return FusionWeights()


class Embedders(Protocol):
    """The served embedding models: the engine serving `model` (None: the default model),
    ready now and granted to `principal`'s key, or a ServiceError (503 while it loads or
    restarts, 404 when none answers to the name, 403 when the key may not use it)."""

    def __call__(
        self, model: str | None, principal: Principal | None = None
    ) -> EmbeddingEngine: ...


@dataclass(frozen=True)
class SearchResult:
    """The hits and where they came from: the model that embedded the query and the
    collection's store generation that answered (one of each, never a mix)."""

    hits: list[dict[str, Any]]
    model: str | None  # None for a lexical search
    generation: int


class CollectionSearch:
    def __init__(self, catalog: Catalog, store: VectorStore, engines: Embedders) -> None:
        self.catalog = catalog
        self.store = store
        self.engines = engines

    def engine_of(
        self, info: CollectionInfo, principal: Principal, *, asked: str | None = None
    ) -> EmbeddingEngine:
        """The engine that embedded the collection (a 409 naming the way out when this server
        does not serve it), checked against the model a request names and, in gateway mode,
        the upstream model's fingerprint."""
        try:
            engine = self.engines(info.model, principal)
        except ServiceError as exc:
            if exc.kind is not ErrorKind.MODEL_NOT_FOUND:
                raise
            raise ServiceError(
                ErrorKind.CONFLICT,
                f"collection {info.name!r} was embedded with {info.model!r}, which this server "
                f"does not serve; serve it beside the new model (--model), or reindex the "
                f"collection with a served one (`embedgate kb reindex {info.name} --model "
                "NAME`): mixing vectors from different models is refused",
                "model",
            ) from None
        check_same_model(engine, info, asked)
        return engine

    async def search(
        self,
        principal: Principal,
        info: CollectionInfo,
        *,
        query: str,
        top_k: int = 5,
        mode: Mode = "hybrid",
        instruction: str | None = None,
        model: str | None = None,
        dimensions: int | None = None,
        weights: dict[str, float] | None = None,
        reranker: RerankEngine | None = None,
        candidates: int | None = None,
    ) -> SearchResult:
        """The best `top_k` chunks for `query`, the query embedded with the collection's own
        model. With a `reranker`, the best `candidates` of the search are rescored with it
        and ordered by that score (`rerank_score`)."""
        name = info.name
        if dimensions is not None and dimensions != info.dimensions:
            raise ServiceError(
                ErrorKind.INVALID_DIMENSIONS,
                f"collection {name!r} stores {info.dimensions}-dimensional vectors, "
                f"not {dimensions}",
                "dimensions",
            )
        if not 1 <= top_k <= 100:
            raise ServiceError(ErrorKind.INVALID_REQUEST, "top_k must be 1-100", "top_k")
        pool = top_k
        if reranker is not None:
            pool = candidates if candidates is not None else max(top_k, 20)
            if not top_k <= pool <= 200:
                raise ServiceError(
                    ErrorKind.INVALID_REQUEST,
                    f"rerank.candidates must be from top_k ({top_k}) to 200",
                    "rerank.candidates",
                )
        query_options = _Query(
            text=query,
            mode=mode,
            depth=pool * 2 + 10,  # documents still indexing are filtered out below
            instruction=instruction,
            weights=weights,
            caller=principal.subject,
        )
        model_check = model if mode != "lexical" else None
        try:
            hits, used = await self._search_generation(info, query_options, principal, model_check)
        except Exception:
            # a reindex switched generations (and dropped this one) under the search: the
            # catalog names the new one, perhaps with a new model: the query is embedded
            # again with it, so the answer comes from one model and one generation
            current = await asyncio.to_thread(self.catalog.collection, name)
            if current is None or current.store_name in (None, info.store_name):
                raise
            hits, used = await self._search_generation(
                current, query_options, principal, model_check
            )
        found = await asyncio.to_thread(self._present, name, hits, pool)
        result = SearchResult(
            hits=found[:top_k],
            model=used.model if mode != "lexical" else None,
            generation=generation_of(used.store_name),
        )
        if reranker is None or not found:
            return result
        scores = await reranker.rerank(
            RerankRequest(
                query=query,
                documents=[hit["text"] for hit in found],
                instruction=instruction if reranker.spec.takes_instructions else None,
                caller=principal.subject,
            )
        )
        for hit, score in zip(found, scores.scores, strict=True):
            hit["rerank_score"] = round(float(score), 6)
        ranked = sorted(found, key=lambda hit: -hit["rerank_score"])[:top_k]
        return dataclasses.replace(result, hits=ranked)

    async def _search_generation(
        self, info: CollectionInfo, query: _Query, principal: Principal, asked: str | None
    ) -> tuple[list[Hit], CollectionInfo]:
        """One store generation searched, its query embedded with that generation's model."""
        store = store_name_of(info)
        vector: list[float] | None = None
        fusion = FusionWeights()
        if query.mode != "lexical":
            engine = self.engine_of(info, principal, asked=asked)
            native = engine.spec.native_dimensions
            request = EmbedRequest(
                [query.text],
                dimensions=None if info.dimensions == native else info.dimensions,
                input_type="query",
                instruction=query.instruction if engine.spec.takes_instructions else None,
                caller=query.caller,
            )
            vector = (await engine.embed(request)).vectors[0].tolist()
            fusion = fusion_for(
                query=query.text,
                covers=engine.spec.covers,
                configured=query.weights or info.fusion,
            )

        def run() -> list[Hit]:
            if query.mode == "lexical":
                return self.store.lexical(store, query.text, query.depth)
            assert vector is not None
            if query.mode == "dense":
                return self.store.dense(store, vector, query.depth)
            return self.store.hybrid(store, vector, query.text, query.depth, fusion)

        return await asyncio.to_thread(run), info

    def _present(self, name: str, hits: list[Hit], top_k: int) -> list[dict[str, Any]]:
        """Only chunks of ready documents, with their file names (one catalog query for the
        documents the hits name, not the whole collection's)."""
        ready = self.catalog.ready_filenames(name, {h.document_id for h in hits})
        return [
            {
                "text": h.text,
                "score": round(h.score, 6),
                "dense_score": _rounded(h.dense_score),
                "lexical_score": _rounded(h.lexical_score),
                "document_id": h.document_id,
                "filename": ready[h.document_id],
                "chunk_index": h.chunk_index,
                "page": h.page,
                "page_start": h.page,
                "page_end": max(h.page_end, h.page),
                "char_start": h.start,
                "char_end": h.end,
                "headings": list(h.headings),
            }
            for h in hits
            if h.document_id in ready
        ][:top_k]


@dataclass(frozen=True, kw_only=True)
class _Query:
    """One search's query and options, as each store generation it runs on needs them."""

    text: str
    mode: Mode
    depth: int
    instruction: str | None
    weights: dict[str, float] | None
    caller: str


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 6)
