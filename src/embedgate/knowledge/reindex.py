"""Rebuild a collection's index without taking search down.

Every chunk is read back from the store collection search uses now, embedded again with the
model the server runs, and written with the current schema (analysed terms, page spans,
heading paths) into the collection's next generation. Search keeps answering from the old
generation the whole time. Then the catalog switches the collection to the new generation in
one statement, the documents that became ready or were deleted meanwhile are reconciled, and
the old generation is dropped.

This is also the upgrade path: a collection made before 0.5 (Milvus's own analyzer, no page
spans) is refused with one line naming `embedgate kb reindex NAME`, and this rebuilds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.naming import generation_of, legacy_store_name, store_name_for
from embedgate.knowledge.vector_store import ChunkRow, VectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo

log = logging.getLogger(__name__)

BATCH = 256
SETTLE_TIMEOUT_S = 120.0
DROP_GRACE_S = 1.0


@dataclass(frozen=True)
class ReindexResult:
    collection: str
    old_store: str
    new_store: str
    model: str
    chunks: int
    documents: int
    seconds: float


class Reindexer:
    """`stop` (the ingest runner's stop event) ends a reindex within a batch; the old index
    stays in use and the half-built one is dropped."""

    def __init__(
        self, catalog: Catalog, store: VectorStore, stop: threading.Event | None = None
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.stop = stop or threading.Event()

    def run(
        self,
        info: CollectionInfo,
        engine: EmbeddingEngine,
        progress: Callable[[int], None] | None = None,
    ) -> ReindexResult:
        started = time.monotonic()
        old = info.store_name or legacy_store_name(info.name)
        new = store_name_for(info.name, generation_of(info.store_name) + 1)
        dimensions = info.dimensions if engine.name == info.model else engine.spec.native_dimensions
        self.store.drop_collection(new)  # left by an interrupted reindex
        self.store.ensure_collection(new, dimensions)
        try:
            copied = self._copy(info, engine, old, new, dimensions, progress)
            if not self.catalog.switch_store(
                info.name, old=info.store_name, new=new, model=engine.name, dimensions=dimensions
            ):
                raise ServiceError(
                    ErrorKind.CONFLICT,
                    f"collection {info.name!r} changed while it was reindexed; run it again",
                )
        except BaseException:
            self.store.drop_collection(new)
            raise
        copied |= self._settle(info, engine, old, new, dimensions, copied)
        self.store.flush(new)
        time.sleep(DROP_GRACE_S)  # searches that read the old name just before the switch
        self.store.drop_collection(old)
        chunks = sum(
            int(d["chunks"]) for d in self.catalog.documents(info.name) if d["status"] == "ready"
        )
        result = ReindexResult(
            info.name, old, new, engine.name, chunks, len(copied), time.monotonic() - started
        )
        log.info("collection reindexed", extra=result.__dict__)
        return result

    def _copy(
        self,
        info: CollectionInfo,
        engine: EmbeddingEngine,
        old: str,
        new: str,
        dimensions: int,
        progress: Callable[[int], None] | None,
        only: set[str] | None = None,
    ) -> set[str]:
        """Re-embed the chunks of ready documents (all, or `only` these) from `old` into
        `new`; returns the documents copied."""
        ready = self.catalog.ready_ids(info.name)
        wanted = ready if only is None else ready & only
        copied: set[str] = set()
        done = 0
        dims = None if dimensions == engine.spec.native_dimensions else dimensions
        for page in self.store.chunks(old, BATCH):
            if self.stop.is_set():
                raise ServiceError(ErrorKind.NOT_READY, "the server is stopping")
            rows = [r for r in page if r.document_id in wanted]
            if not rows:
                continue
            result = engine.embed_sync(
                EmbedRequest(
                    [r.text for r in rows],
                    dimensions=dims,
                    input_type="document",
                    truncate=True,
                    caller=f"reindex:{info.name}",
                ),
                cancel=self.stop,
            )
            self.store.upsert(
                new,
                [
                    ChunkRow(
                        id=r.id,
                        document_id=r.document_id,
                        chunk_index=r.chunk_index,
                        text=r.text,
                        page=r.page,
                        page_end=r.page_end,
                        start=r.start,
                        end=r.end,
                        headings=r.headings,
                        vector=vector,
                    )
                    for r, vector in zip(rows, result.vectors.tolist(), strict=True)
                ],
            )
            copied.update(r.document_id for r in rows)
            done += len(rows)
            if progress is not None:
                progress(done)
        return copied

    def _settle(
        self,
        info: CollectionInfo,
        engine: EmbeddingEngine,
        old: str,
        new: str,
        dimensions: int,
        copied: set[str],
    ) -> set[str]:
        """After the switch: wait for jobs that were storing into the old generation, copy
        the documents they finished, and remove documents deleted during the copy."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline and any(
            j["collection"] == info.name and j["stage"] == "storing"
            for j in self.catalog.unfinished_jobs()
        ):
            time.sleep(0.2)
        ready = self.catalog.ready_ids(info.name)
        late = {d for d in ready - copied if self.store.count_document(new, d) == 0}
        added = self._copy(info, engine, old, new, dimensions, None, only=late) if late else set()
        for gone in copied - ready:
            self.store.delete_document(new, gone)
        return added
