"""Ingest jobs: parse -> chunk -> embed, then near-duplicate check -> insert -> ready.

Jobs run off the request path (an upload answers 202 at once) in a two-stage pipeline: one
thread parses, chunks and embeds, a second stores, so the model is already embedding the next
document while the previous one is analysed and written by the vector store. A
document turns `ready` only after every chunk is stored and counted back; until then search
ignores it. After a crash, `recover()` removes the partial chunks of every unfinished job and
runs it again from the stored upload (or fails it when the upload is gone).

`stop()` ends the pipeline within about one embedding batch: a job it interrupts is left
unfinished, not failed, so the next start's `recover()` runs it again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgate.engine import EmbeddingEngine, Embeddings, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.chunker import Chunk, chunk_text
from embedgate.knowledge.parse_worker import ParseWorker
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.vector_store import ChunkRow, VectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo
from embedgate.storage.records import DocumentRow, NearDuplicate

log = logging.getLogger(__name__)

EMBED_BATCH = 256
PAUSE_ON = frozenset({ErrorKind.MODEL_UNAVAILABLE, ErrorKind.NOT_READY})
UPSERT_BATCH = 512


@dataclass(frozen=True)
class Prepared:
    """A document between the stages: chunked and embedded, not yet stored."""

    job_id: str
    doc_id: str
    collection: str
    chunks: list[Chunk]
    vectors: list[list[float]]
    tokens: int


class Stopped(Exception):
    """The runner is stopping: leave the current job unfinished for `recover()`."""


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
        parser: ParseWorker | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self._engine = engine
        self.settings = settings
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._store_queue: queue.Queue[Prepared | None] = queue.Queue(maxsize=2)
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.parser = parser or ParseWorker()
        self._stopping = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._loop, name="embedgate-ingest", daemon=True),
            threading.Thread(target=self._store_loop, name="embedgate-store", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both stages and the parse worker; an interrupted job stays unfinished."""
        self._stopping.set()
        self._queue.put(None)
        with contextlib.suppress(queue.Full):
            self._store_queue.put_nowait(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        self.parser.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def submit(self, job_id: str) -> None:
        with self._count_lock:
            self._in_flight += 1
            self.idle.clear()
        self._queue.put(job_id)

    def _finished(self) -> None:
        with self._count_lock:
            self._in_flight -= 1
            if self._in_flight <= 0:
                self._in_flight = 0
                self.idle.set()

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
            job_id = self._queue.get()
            if job_id is None or self.stopping:
                with contextlib.suppress(queue.Full):
                    self._store_queue.put_nowait(None)
                return
            prepared = None
            try:
                prepared = self.prepare(job_id)
            except Stopped:
                return
            except Exception:
                log.exception("ingest job crashed", extra={"job_id": job_id})
            if prepared is None:
                self._finished()
            else:
                self._store_queue.put(prepared)

    def _store_loop(self) -> None:
        while True:
            prepared = self._store_queue.get()
            if prepared is None or self.stopping:
                return
            try:
                self.store_prepared(prepared)
            except Stopped:
                return
            except Exception:
                log.exception("ingest storage crashed", extra={"job_id": prepared.job_id})
            finally:
                self._finished()

    def _wait_for_engine(self) -> EmbeddingEngine:
        while True:
            engine = self._engine()
            if engine is not None:
                return engine
            if self._stopping.wait(0.2):
                raise Stopped

    def _embed(self, request: EmbedRequest) -> Embeddings:
        """One batch; while the model process is being replaced the job pauses and resumes
        (it does not fail), until the runner stops."""
        while True:
            engine = self._wait_for_engine()
            try:
                return engine.embed_sync(request, cancel=self._stopping)
            except ServiceError as exc:
                if exc.kind not in PAUSE_ON:
                    raise
                log.warning(
                    "ingest paused: the model is unavailable", extra={"reason": exc.message}
                )
            if self._stopping.wait(1.0):
                raise Stopped

    def run(self, job_id: str) -> None:
        """Both stages, in this thread (tests and tools)."""
        prepared = self.prepare(job_id)
        if prepared is not None:
            self.store_prepared(prepared)

    def prepare(self, job_id: str) -> Prepared | None:
        """Stage 1: parse, chunk, embed. None when the job already failed."""
        job = self.catalog.job(job_id)
        if job is None:
            return None
        doc_id = job["document_id"]
        document = self.catalog.document(doc_id)
        collection = self.catalog.collection(job["collection"])
        if document is None or collection is None:
            self.catalog.update_job(job_id, status="failed", stage="failed", error="deleted")
            return None
        prepared: Prepared | None = self._guarded(
            job_id, doc_id, collection.name, lambda: self._prepare(job_id, document, collection)
        )
        return prepared

    def store_prepared(self, prepared: Prepared) -> None:
        """Stage 2: near-duplicate check, insert, verify, mark ready."""
        self._guarded(
            prepared.job_id, prepared.doc_id, prepared.collection, lambda: self._store(prepared)
        )

    def _guarded(self, job_id: str, doc_id: str, collection: str, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Stopped:
            raise
        except Exception as exc:
            if self.stopping:  # the engine or store went away under a stopping runner
                raise Stopped from None
            if isinstance(exc, ServiceError):
                self._fail(job_id, doc_id, collection, exc.message)
            else:
                log.exception("ingest failed", extra={"job_id": job_id})
                self._fail(job_id, doc_id, collection, f"internal error ({type(exc).__name__})")
        return None

    def _fail(self, job_id: str, doc_id: str, collection: str, message: str) -> None:
        try:
            self.store.delete_document(collection, doc_id)
        finally:
            self.catalog.update_document(doc_id, status="failed", error=message)
            self.catalog.update_job(job_id, status="failed", stage="failed", error=message)

    def _stage(self, job_id: str, stage: str, progress: float) -> None:
        self.catalog.update_job(job_id, status="running", stage=stage, progress=round(progress, 3))

    def _prepare(self, job_id: str, document: DocumentRow, collection: CollectionInfo) -> Prepared:
        doc_id = document["id"]
        self.catalog.update_document(doc_id, status="indexing")
        self._stage(job_id, "parsing", 0.02)
        data = self.upload_path(doc_id).read_bytes()
        parsed = self.parser.parse(
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
            if self.stopping:
                raise Stopped
            batch = chunks[start : start + EMBED_BATCH]
            result = self._embed(
                EmbedRequest(
                    [c.text for c in batch],
                    dimensions=dims,
                    input_type="document",
                    truncate=True,
                    caller=f"ingest:{collection.name}",  # ingest takes turns with the API
                )
            )
            vectors.extend(result.vectors.tolist())
            tokens += result.prompt_tokens
            self._stage(job_id, "embedding", 0.05 + 0.8 * (start + len(batch)) / len(chunks))
        return Prepared(job_id, doc_id, collection.name, chunks, vectors, tokens)

    def _store(self, prepared: Prepared) -> None:
        job_id, doc_id, chunks, vectors = (
            prepared.job_id,
            prepared.doc_id,
            prepared.chunks,
            prepared.vectors,
        )
        collection_name = prepared.collection
        self._stage(job_id, "storing", 0.9)
        near = self._near_duplicates(collection_name, doc_id, vectors)
        rows = [
            self._row(doc_id, chunk, vector) for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        for start in range(0, len(rows), UPSERT_BATCH):
            self.store.upsert(collection_name, rows[start : start + UPSERT_BATCH])
        if self._queue.empty() and self._store_queue.empty():
            self.store.flush(collection_name)  # seal segments once the burst of work is over
        stored = self.store.count_document(collection_name, doc_id)
        if stored != len(rows):
            raise ServiceError(
                ErrorKind.BACKEND_FAILURE,
                f"stored {stored} of {len(rows)} chunks; retry the upload",
            )
        self.catalog.update_document(
            doc_id,
            status="ready",
            chunks=len(rows),
            tokens=prepared.tokens,
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
    ) -> list[NearDuplicate]:
        """Other ready documents with a chunk at or above the similarity threshold."""
        ready = self.catalog.ready_ids(collection)
        if not ready:
            return []
        found: dict[str, NearDuplicate] = {}
        threshold = self.settings.near_duplicate_threshold
        for start in range(0, len(vectors), EMBED_BATCH):
            batch = vectors[start : start + EMBED_BATCH]
            for hits in self.store.dense_many(collection, batch, 3, exclude_document=doc_id):
                hit = next((h for h in hits if h.document_id in ready), None)
                if hit is None or hit.score < threshold:
                    continue
                entry = found.setdefault(
                    hit.document_id,
                    NearDuplicate(
                        document_id=hit.document_id, chunks=0, max_similarity=0.0, share=0.0
                    ),
                )
                entry["chunks"] += 1
                entry["max_similarity"] = round(max(entry["max_similarity"], hit.score), 4)
        for entry in found.values():
            entry["share"] = round(entry["chunks"] / max(len(vectors), 1), 3)
        return sorted(found.values(), key=lambda e: -e["max_similarity"])
