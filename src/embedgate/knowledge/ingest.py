"""Ingest jobs: parse -> chunk -> embed, then near-duplicate check -> insert -> ready.

Jobs run off the request path (an upload answers 202 at once) in a two-stage pipeline: one
thread parses, chunks and embeds, a second stores, so the model is already embedding the next
document while the previous one is written by the vector store. The first stage runs jobs a
step at a time (the parse, then each embedding batch), taking turns between collections
(`job_queue.FairJobs`), so a huge upload never holds up a small one for more than a batch.

A document turns `ready` only after every chunk is stored and counted back; until then search
ignores it. Deleting a document or its collection, or the job itself, calls the job off
within a step (the parse worker is killed, queued model inputs are dropped). After a crash,
`recover()` removes the partial chunks of every unfinished job and runs it again from the
stored upload (or fails it when the upload is gone).

`stop()` ends the pipeline within about one embedding batch: a job it interrupts is left
unfinished, not failed, so the next start's `recover()` runs it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedgate.engine import EmbeddingEngine
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.analysis import script_language
from embedgate.knowledge.chunker import Chunk, chunk_text
from embedgate.knowledge.coverage import CoverageWarnings, check_same_model
from embedgate.knowledge.ingest_models import EMBED_BATCH, CollectionEmbedder, JobCancelled, Stopped
from embedgate.knowledge.job_queue import ActiveJob, Cancellation, FairJobs, JobOutcomes
from embedgate.knowledge.near_duplicates import find_near_duplicates
from embedgate.knowledge.parse_worker import ParseCancelled, ParseWorker
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.vector_store import ChunkRow, VectorStore
from embedgate.storage.catalog import Catalog

log = logging.getLogger(__name__)

REINDEX_DOCUMENT = "-"  # the document id of a reindex job (it has no document)
UPSERT_BATCH = 512


@dataclass(frozen=True)
class Prepared:
    """A document between the stages: chunked and embedded, not yet stored."""

    job_id: str
    doc_id: str
    collection: str
    chunks: list[Chunk]
    vectors: np.ndarray  # float32 rows: a Python list of floats costs 8x the memory
    tokens: int
    language: str
    pages: int
    cancel: Cancellation
    model: str  # the model that embedded `vectors` (the collection's at the time)


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
        engine: Callable[[str], EmbeddingEngine | None],
        settings: IngestSettings,
        parser: ParseWorker | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self._stopping = threading.Event()
        self.models = CollectionEmbedder(engine, self._stopping)
        self.settings = settings
        self.jobs = FairJobs()
        self._store_queue: queue.Queue[Prepared | None] = queue.Queue(maxsize=2)
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.parser = parser or ParseWorker()
        self.coverage = CoverageWarnings()
        self.outcomes = JobOutcomes()

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
        self.jobs.wake()
        with contextlib.suppress(queue.Full):
            self._store_queue.put_nowait(None)
        self.parser.close()  # a parse in progress ends now rather than at its deadline
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        self.parser.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def stop_event(self) -> threading.Event:
        return self._stopping

    def run_task(self, work: Callable[[], None], name: str) -> None:
        """Background work the runner owns (a reindex): joined when the runner stops."""
        thread = threading.Thread(target=work, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def submit(self, job_id: str, *, document_id: str, collection: str) -> None:
        with self._count_lock:
            self._in_flight += 1
            self.idle.clear()
        self.jobs.add(
            ActiveJob(job_id, document_id, collection, cancel=Cancellation(self._stopping))
        )

    def _finished(self) -> None:
        with self._count_lock:
            self._in_flight -= 1
            if self._in_flight <= 0:
                self._in_flight = 0
                self.idle.set()

    # --- calling jobs off --------------------------------------------------------------------
    def cancel_job(self, job_id: str) -> int:
        return self.jobs.cancel(job_id=job_id)

    def cancel_document(self, document_id: str) -> int:
        return self.jobs.cancel(document_id=document_id)

    def cancel_collection(self, collection: str) -> int:
        return self.jobs.cancel(collection=collection)

    def _check(self, job: ActiveJob) -> None:
        """Between steps: stop for the runner, drop a job called off in this process. (One
        called off on another replica is caught by `_stage`, whose progress update only
        moves a job that is still queued or running.)"""
        if self.stopping:
            raise Stopped
        if job.cancel.cancelled:
            raise JobCancelled

    def recover(self) -> list[str]:
        """Clean up and re-queue jobs a crash left unfinished; returns their ids."""
        resumed = []
        for job in self.catalog.unfinished_jobs():
            doc_id, collection = job["document_id"], job["collection"]
            if doc_id == REINDEX_DOCUMENT:  # search still uses the old index: just say so
                message = "interrupted by a restart; run the reindex again"
                self.catalog.update_job(job["id"], status="failed", stage="failed", error=message)
                continue
            info = self.catalog.collection(collection)
            try:
                if info is not None and info.store_name is not None:
                    self.store.delete_document(info.store_name, doc_id)
            except Exception:
                log.warning("could not clear partial chunks", extra={"document_id": doc_id})
            if self.upload_path(doc_id).exists() and info is not None:
                self.catalog.update_job(job["id"], status="queued", stage="queued", progress=0.0)
                self.catalog.update_document(doc_id, status="queued", error=None)
                self.submit(job["id"], document_id=doc_id, collection=collection)
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
        while not self.stopping:
            job = self.jobs.next_turn(timeout=0.5)
            if job is None:
                continue
            if job.steps is None:
                job.steps = self._prepare_steps(job)
            try:
                next(job.steps)
                continue  # a step done; the next collection's turn
            except StopIteration as done:
                prepared = done.value
            except Stopped:
                return
            except JobCancelled:
                log.info("ingest job called off", extra={"job_id": job.job_id})
                self.outcomes.count("cancelled")
                prepared = None
            except Exception as exc:
                self._failed(job, exc)
                prepared = None
            self.jobs.finish(job)
            if prepared is None:
                self._finished()
            else:
                self._store_queue.put(prepared)

    def _failed(self, job: ActiveJob, exc: Exception) -> None:
        if self.stopping:  # the engine or store went away under a stopping runner
            return
        if isinstance(exc, ServiceError):
            message = exc.message
        else:
            log.error("ingest failed", exc_info=exc, extra={"job_id": job.job_id})
            message = f"internal error ({type(exc).__name__})"
        self._fail(job.job_id, job.document_id, job.collection, message)

    def _store_loop(self) -> None:
        while True:
            prepared = self._store_queue.get()
            if prepared is None or self.stopping:
                return
            try:
                self.store_prepared(prepared)
            except Stopped:
                return
            except JobCancelled:
                log.info("ingest job called off", extra={"job_id": prepared.job_id})
                self.outcomes.count("cancelled")
            finally:
                self._finished()

    def run(self, job_id: str) -> None:
        """Both stages, in this thread (tests and tools)."""
        job = self.catalog.job(job_id)
        if job is None:
            return
        active = ActiveJob(
            job_id, job["document_id"], job["collection"], Cancellation(self._stopping)
        )
        steps = self._prepare_steps(active)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            if done.value is not None:
                self.store_prepared(done.value)
        except JobCancelled:
            self.outcomes.count("cancelled")
        except Exception as exc:
            self._failed(active, exc)

    def store_prepared(self, prepared: Prepared) -> None:
        """Stage 2: near-duplicate check, insert, verify, mark ready."""
        try:
            self._store(prepared)
        except (Stopped, JobCancelled):
            raise
        except Exception as exc:
            if self.stopping:
                raise Stopped from None
            if isinstance(exc, ServiceError):
                message = exc.message
            else:
                log.exception("ingest failed", extra={"job_id": prepared.job_id})
                message = f"internal error ({type(exc).__name__})"
            self._fail(prepared.job_id, prepared.doc_id, prepared.collection, message)

    def _fail(self, job_id: str, doc_id: str, collection: str, message: str) -> None:
        info = self.catalog.collection(collection)
        try:
            if info is not None and info.store_name is not None:
                self.store.delete_document(info.store_name, doc_id)
        finally:
            self.outcomes.count("failed")
            self.catalog.update_document(doc_id, status="failed", error=message)
            self.catalog.update_job(job_id, status="failed", stage="failed", error=message)

    def _stage(self, job_id: str, stage: str, progress: float) -> None:
        if not self.catalog.advance_job(
            job_id, status="running", stage=stage, progress=round(progress, 3)
        ):
            raise JobCancelled  # cancelled (or failed) meanwhile, here or on another replica

    def _prepare_steps(self, job: ActiveJob) -> Generator[None, None, Prepared | None]:
        """Stage 1 as steps: parse, chunk, then one embedding batch per step."""
        self._check(job)
        document = self.catalog.document(job.document_id)
        collection = self.catalog.collection(job.collection)
        if document is None or collection is None:
            raise JobCancelled
        doc_id = document["id"]
        self._stage(job.job_id, "parsing", 0.02)  # first: it fails for a cancelled job
        self.catalog.update_document(doc_id, status="indexing")
        data = self.upload_path(doc_id).read_bytes()
        try:
            parsed = self.parser.parse(
                document["filename"],
                data,
                self.settings.parse_limits,
                self.settings.parse_timeout_s,
                cancel=job.cancel,
            )
        except ParseCancelled:
            raise Stopped if self.stopping else JobCancelled from None
        del data
        yield
        self._check(job)
        engine = self.models.wait_for_engine(collection)
        check_same_model(engine, collection)
        self._stage(job.job_id, "chunking", 0.05)
        room = engine.max_content_tokens
        chunks = chunk_text(
            parsed.pages,
            engine.count_tokens,
            max_tokens=max(2, min(collection.chunk_tokens, room)),
            overlap_tokens=collection.chunk_overlap,
        )
        if not chunks:
            raise ServiceError(ErrorKind.INVALID_REQUEST, "the document has no text to index")
        vectors = np.empty((len(chunks), collection.dimensions), dtype=np.float32)
        tokens = 0
        for start in range(0, len(chunks), EMBED_BATCH):
            yield
            self._check(job)
            batch = chunks[start : start + EMBED_BATCH]
            result = self.models.embed_batch(batch, collection, engine, job.cancel)
            vectors[start : start + len(batch)] = result.vectors
            tokens += result.prompt_tokens
            self._stage(job.job_id, "embedding", 0.05 + 0.8 * (start + len(batch)) / len(chunks))
        return Prepared(
            job.job_id,
            doc_id,
            collection.name,
            chunks,
            vectors,
            tokens,
            language=script_language(parsed.text),
            pages=len(parsed.pages),
            cancel=job.cancel,
            model=collection.model,
        )

    def _store(self, prepared: Prepared) -> None:
        job_id, doc_id, chunks = prepared.job_id, prepared.doc_id, prepared.chunks
        info = self.catalog.collection(prepared.collection)  # now: a reindex may have switched
        if info is None or info.store_name is None or prepared.cancel.cancelled:
            self.outcomes.count("cancelled")
            return
        store = info.store_name
        self._stage(job_id, "storing", 0.9)
        if prepared.model != info.model:  # a reindex moved the collection to another model
            vectors = self.models.embedded_again(prepared.chunks, info, prepared.cancel)
            prepared = dataclasses.replace(prepared, vectors=vectors, model=info.model)
        near = find_near_duplicates(
            self.store,
            store,
            ready=self.catalog.ready_ids(info.name),
            doc_id=doc_id,
            vectors=prepared.vectors,
            threshold=self.settings.near_duplicate_threshold,
        )
        for start in range(0, len(chunks), UPSERT_BATCH):
            if prepared.cancel.is_set():
                break
            rows = [
                self._row(doc_id, chunk, vector)
                for chunk, vector in zip(
                    chunks[start : start + UPSERT_BATCH],
                    prepared.vectors[start : start + UPSERT_BATCH].tolist(),
                    strict=True,
                )
            ]
            self.store.upsert(store, rows)
        if prepared.cancel.is_set():
            self.store.delete_document(store, doc_id)
            raise Stopped if self.stopping else JobCancelled
        if not len(self.jobs) and self._store_queue.empty():
            self.store.flush(store)  # seal segments once the burst of work is over
        stored = self.store.count_document(store, doc_id)
        if stored != len(chunks):
            raise ServiceError(
                ErrorKind.BACKEND_FAILURE,
                f"stored {stored} of {len(chunks)} chunks; retry the upload",
            )
        # a job cancelled meanwhile (here or on another replica) must not leave a ready
        # document behind; one that was not ends with its document ready, atomically
        finished = self.catalog.finish_document_job(
            job_id,
            doc_id=doc_id,
            status="ready",
            chunks=len(chunks),
            tokens=prepared.tokens,
            near_duplicates=near,
            error=None,
            language=prepared.language,
            pages=prepared.pages,
        )
        if not finished:
            self.store.delete_document(store, doc_id)
            self.outcomes.count("cancelled")
            return
        if self.catalog.document(doc_id) is None:  # deleted while it was being written
            self.store.delete_document(store, doc_id)
            self.outcomes.count("cancelled")
            return
        self.outcomes.count("succeeded")
        log.info("document indexed", extra={"document_id": doc_id, "chunks": len(chunks)})
        engine = self.models.engine_if_ready(info.model)
        if engine is not None and not engine.spec.covers(prepared.language):
            self.coverage.check(info.name, engine, self.catalog.chunks_by_language(info.name))

    @staticmethod
    def _row(doc_id: str, chunk: Chunk, vector: list[float]) -> ChunkRow:
        return ChunkRow(
            id=f"{doc_id}:{chunk.index}",
            document_id=doc_id,
            chunk_index=chunk.index,
            text=chunk.text,
            page=chunk.page,
            page_end=max(chunk.page_end, chunk.page),
            start=chunk.start,
            end=chunk.end,
            headings=chunk.headings,
            vector=vector,
        )
