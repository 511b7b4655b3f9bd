"""Ingest jobs: parse -> chunk -> embed -> near-duplicate check -> upsert -> ready.

Jobs run on one background thread, off the request path (an upload answers 202 at once). A
document turns `ready` only after every chunk is stored and counted back; until then search
ignores it. After a crash, `recover()` removes the partial chunks of every unfinished job and
runs it again from the stored upload (or fails it when the upload is gone).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.chunker import Chunk, chunk_text
from embedgate.knowledge.parse_worker import parse_with_limit
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.vector_store import ChunkRow, VectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo

log = logging.getLogger(__name__)

EMBED_BATCH = 256
UPSERT_BATCH = 512


@dataclass(frozen=True)
class IngestSettings:
    uploads: Path
    parse_limits: ParseLimits
    parse_timeout_s: float = 60.0
    near_duplicate_threshold: float = 0.95


class IngestRunner:
    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        engine: Callable[[], EmbeddingEngine | None],
        settings: IngestSettings,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self._engine = engine
        self.settings = settings
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.idle = threading.Event()
        self.idle.set()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="embedgate-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, job_id: str) -> None:
        self.idle.clear()
        self._queue.put(job_id)

    def recover(self) -> list[str]:
        """Clean up and re-queue jobs a crash left unfinished; returns their ids."""
        resumed = []
        for job in self.catalog.unfinished_jobs():
            doc_id, collection = job["document_id"], job["collection"]
            try:
                self.store.delete_document(collection, doc_id)
            except Exception:
                log.warning("could not clear partial chunks", extra={"document_id": doc_id})
            if self.upload_path(doc_id).exists():
                self.catalog.update_job(job["id"], status="queued", stage="queued", progress=0.0)
                self.catalog.update_document(doc_id, status="queued", error=None)
                self.submit(job["id"])
                resumed.append(job["id"])
            else:
                message = "interrupted by a restart and its upload is gone; upload it again"
                self.catalog.update_job(job["id"], status="failed", stage="failed", error=message)
                self.catalog.update_document(doc_id, status="failed", error=message)
        if resumed:
            log.warning("resuming interrupted ingest jobs", extra={"jobs": resumed})
        return resumed

    def upload_path(self, doc_id: str) -> Path:
        return self.settings.uploads / f"{doc_id}.bin"

    # --- the pipeline ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self._queue.empty():
                self.idle.set()
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self.run(job_id)
            except Exception:
                log.exception("ingest job crashed", extra={"job_id": job_id})

    def _wait_for_engine(self) -> EmbeddingEngine:
        while True:
            engine = self._engine()
            if engine is not None:
                return engine
            threading.Event().wait(0.2)

    def run(self, job_id: str) -> None:
        job = self.catalog.job(job_id)
        if job is None:
            return
        doc_id = job["document_id"]
        document = self.catalog.document(doc_id)
        collection = self.catalog.collection(job["collection"])
        if document is None or collection is None:
            self.catalog.update_job(job_id, status="failed", stage="failed", error="deleted")
            return
        try:
            self._ingest(job_id, document, collection)
        except ServiceError as exc:
            self._fail(job_id, doc_id, collection.name, exc.message)
        except Exception as exc:
            log.exception("ingest failed", extra={"job_id": job_id})
            self._fail(job_id, doc_id, collection.name, f"internal error ({type(exc).__name__})")

    def _fail(self, job_id: str, doc_id: str, collection: str, message: str) -> None:
        try:
            self.store.delete_document(collection, doc_id)
        finally:
            self.catalog.update_document(doc_id, status="failed", error=message)
            self.catalog.update_job(job_id, status="failed", stage="failed", error=message)

    def _stage(self, job_id: str, stage: str, progress: float) -> None:
        self.catalog.update_job(job_id, status="running", stage=stage, progress=round(progress, 3))

    def _ingest(self, job_id: str, document: dict[str, Any], collection: CollectionInfo) -> None:
        doc_id = document["id"]
        self.catalog.update_document(doc_id, status="indexing")
        self._stage(job_id, "parsing", 0.02)
        data = self.upload_path(doc_id).read_bytes()
        parsed = parse_with_limit(
            document["filename"], data, self.settings.parse_limits, self.settings.parse_timeout_s
        )
        engine = self._wait_for_engine()
        self._check_model(engine, collection)
        self._stage(job_id, "chunking", 0.05)
        room = engine.max_input_tokens - engine.backend.template.overhead
        chunks = chunk_text(
            parsed.pages,
            lambda texts: [len(ids) for ids in engine.backend.tokenize(texts)],
            max_tokens=max(2, min(collection.chunk_tokens, room)),
            overlap_tokens=collection.chunk_overlap,
        )
        if not chunks:
            raise ServiceError(ErrorKind.INVALID_REQUEST, "the document has no text to index")
        dims = (
            None
            if collection.dimensions == engine.spec.native_dimensions
            else collection.dimensions
        )
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(chunks), EMBED_BATCH):
            batch = chunks[start : start + EMBED_BATCH]
            result = engine.embed_sync(
                EmbedRequest(
                    [c.text for c in batch], dimensions=dims, input_type="document", truncate=True
                )
            )
            vectors.extend(result.vectors.tolist())
            tokens += result.prompt_tokens
            self._stage(job_id, "embedding", 0.05 + 0.8 * (start + len(batch)) / len(chunks))
        near = self._near_duplicates(collection.name, doc_id, vectors)
        self._stage(job_id, "storing", 0.9)
        rows = [
            self._row(doc_id, chunk, vector) for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        for start in range(0, len(rows), UPSERT_BATCH):
            self.store.upsert(collection.name, rows[start : start + UPSERT_BATCH])
        self.store.flush(collection.name)
        stored = self.store.count_document(collection.name, doc_id)
        if stored != len(rows):
            raise ServiceError(
                ErrorKind.BACKEND_FAILURE,
                f"stored {stored} of {len(rows)} chunks; retry the upload",
            )
        self.catalog.update_document(
            doc_id,
            status="ready",
            chunks=len(rows),
            tokens=tokens,
            near_duplicates=near,
            error=None,
        )
        self.catalog.update_job(job_id, status="succeeded", stage="done", progress=1.0)
        log.info("document indexed", extra={"document_id": doc_id, "chunks": len(rows)})

    @staticmethod
    def _row(doc_id: str, chunk: Chunk, vector: list[float]) -> ChunkRow:
        return ChunkRow(
            id=f"{doc_id}:{chunk.index}",
            document_id=doc_id,
            chunk_index=chunk.index,
            text=chunk.text,
            page=chunk.page,
            start=chunk.start,
            end=chunk.end,
            headings=" > ".join(chunk.headings),
            vector=vector,
        )

    def _check_model(self, engine: EmbeddingEngine, collection: CollectionInfo) -> None:
        if engine.name != collection.model:
            raise ServiceError(
                ErrorKind.CONFLICT,
                f"collection {collection.name!r} is embedded with {collection.model!r} but this "
                f"server runs {engine.name!r}; vectors from different models cannot be mixed",
            )

    def _near_duplicates(
        self, collection: str, doc_id: str, vectors: list[list[float]]
    ) -> list[dict[str, Any]]:
        """Other ready documents with a chunk at or above the similarity threshold."""
        ready = self.catalog.ready_ids(collection)
        if not ready:
            return []
        found: dict[str, dict[str, Any]] = {}
        threshold = self.settings.near_duplicate_threshold
        for start in range(0, len(vectors), EMBED_BATCH):
            batch = vectors[start : start + EMBED_BATCH]
            for hits in self.store.dense_many(collection, batch, 3, exclude_document=doc_id):
                hit = next((h for h in hits if h.document_id in ready), None)
                if hit is None or hit.score < threshold:
                    continue
                entry = found.setdefault(
                    hit.document_id,
                    {"document_id": hit.document_id, "chunks": 0, "max_similarity": 0.0},
                )
                entry["chunks"] += 1
                entry["max_similarity"] = round(max(entry["max_similarity"], hit.score), 4)
        for entry in found.values():
            entry["share"] = round(entry["chunks"] / max(len(vectors), 1), 3)
        return sorted(found.values(), key=lambda e: -float(e["max_similarity"]))
