"""The model side of ingest: each collection's documents are embedded with the collection's
own model (several embedding models may be served), in batches that take turns with the API,
pausing (not failing) while that model's process is being replaced."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

import numpy as np

from embedgate.engine import EmbeddingEngine, Embeddings, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.chunker import Chunk
from embedgate.knowledge.job_queue import Cancellation
from embedgate.storage.catalog import CollectionInfo

log = logging.getLogger(__name__)

EMBED_BATCH = 256
PAUSE_ON = frozenset({ErrorKind.MODEL_UNAVAILABLE, ErrorKind.NOT_READY})


class Stopped(Exception):
    """The runner is stopping: leave the current job unfinished for `recover()`."""


class JobCancelled(Exception):
    """The job's document, collection or the job itself was deleted: drop its work."""


class CollectionEmbedder:
    """`engines(model)`: the engine serving a model when it can take work now, None while it
    cannot yet, a ServiceError (`model_not_found`) when no served model has that name."""

    def __init__(
        self, engines: Callable[[str], EmbeddingEngine | None], stopping: threading.Event
    ) -> None:
        self._engines = engines
        self._stopping = stopping

    def engine_if_ready(self, model: str) -> EmbeddingEngine | None:
        """The engine serving `model` when it can take work now, else None."""
        try:
            return self._engines(model)
        except ServiceError:
            return None

    def wait_for_engine(self, collection: CollectionInfo) -> EmbeddingEngine:
        """The engine of the collection's model, once it can take work (a model this server
        does not serve fails the job with the way out)."""
        while True:
            try:
                engine = self._engines(collection.model)
            except ServiceError as exc:
                if exc.kind is not ErrorKind.MODEL_NOT_FOUND:
                    raise
                raise ServiceError(
                    ErrorKind.CONFLICT,
                    f"collection {collection.name!r} was embedded with {collection.model!r}, "
                    "which this server does not serve; serve it beside the new model or "
                    f"reindex the collection (`embedgate kb reindex {collection.name} --model "
                    "NAME`)",
                    "model",
                ) from None
            if engine is not None:
                return engine
            if self._stopping.wait(0.2):
                raise Stopped

    def embed(
        self, request: EmbedRequest, cancel: Cancellation, collection: CollectionInfo
    ) -> Embeddings:
        """One batch; while the model process is being replaced the job pauses and resumes
        (it does not fail), until the runner stops or the job is called off."""
        while True:
            engine = self.wait_for_engine(collection)
            try:
                return engine.embed_sync(request, cancel=cancel)
            except concurrent.futures.CancelledError:
                raise Stopped if self._stopping.is_set() else JobCancelled from None
            except ServiceError as exc:
                if exc.kind not in PAUSE_ON:
                    raise
                log.warning(
                    "ingest paused: the model is unavailable", extra={"reason": exc.message}
                )
            if self._stopping.wait(1.0):
                raise Stopped

    def embed_batch(
        self,
        batch: list[Chunk],
        collection: CollectionInfo,
        engine: EmbeddingEngine,
        cancel: Cancellation,
    ) -> Embeddings:
        native = engine.spec.native_dimensions
        request = EmbedRequest(
            [c.text for c in batch],
            dimensions=None if collection.dimensions == native else collection.dimensions,
            input_type="document",
            truncate=True,
            caller=f"ingest:{collection.name}",  # ingest takes turns with the API
        )
        return self.embed(request, cancel, collection)

    def embedded_again(
        self, chunks: list[Chunk], collection: CollectionInfo, cancel: Cancellation
    ) -> np.ndarray:
        """Chunks embedded before a reindex moved their collection to another model, embedded
        again with its model now, so no generation ever holds vectors of two models."""
        engine = self.wait_for_engine(collection)
        vectors = np.empty((len(chunks), collection.dimensions), dtype=np.float32)
        for start in range(0, len(chunks), EMBED_BATCH):
            batch = chunks[start : start + EMBED_BATCH]
            result = self.embed_batch(batch, collection, engine, cancel)
            vectors[start : start + len(batch)] = result.vectors
        return vectors
