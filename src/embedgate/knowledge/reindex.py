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

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.naming import generation_of, legacy_store_name, store_name_for
from embedgate.knowledge.vector_store import VectorStore
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
        plan = _Plan(
            collection=info.name,
            engine=engine,
            old=info.store_name or legacy_store_name(info.name),
            new=store_name_for(info.name, generation_of(info.store_name) + 1),
            dimensions=(
                info.dimensions if engine.name == info.model else engine.spec.native_dimensions
            ),
        )
        self.store.drop_collection(plan.new)  # left by an interrupted reindex
        self.store.ensure_collection(plan.new, plan.dimensions)
        try:
            copied = self._copy(plan, progress)
            if not self.catalog.switch_store(
                info.name,
                old=info.store_name,
                new=plan.new,
                model=engine.name,
                dimensions=plan.dimensions,
                fingerprint=engine.describe().fingerprint,
            ):
                raise ServiceError(
                    ErrorKind.CONFLICT,
                    f"collection {info.name!r} changed while it was reindexed; run it again",
                )
        except BaseException:
            self.store.drop_collection(plan.new)
            raise
        copied |= self._settle(plan, copied)
        self.store.flush(plan.new)
        time.sleep(DROP_GRACE_S)  # searches that read the old name just before the switch
        self.store.drop_collection(plan.old)
        result = ReindexResult(
            info.name,
            plan.old,
            plan.new,
            engine.name,
            sum(self.catalog.chunks_by_language(info.name).values()),
            len(copied),
            time.monotonic() - started,
        )
        log.info("collection reindexed", extra=result.__dict__)
        return result

    def _copy(
        self,
        plan: _Plan,
        progress: Callable[[int], None] | None = None,
        only: set[str] | None = None,
    ) -> set[str]:
        """Re-embed the chunks of ready documents (all, or `only` these) from the old
        generation into the new one; returns the documents copied."""
        engine = plan.engine
        ready = self.catalog.ready_ids(plan.collection)
        wanted = ready if only is None else ready & only
        copied: set[str] = set()
        done = 0
        dims = None if plan.dimensions == engine.spec.native_dimensions else plan.dimensions
        for page in self.store.chunks(plan.old, BATCH):
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
                    caller=f"reindex:{plan.collection}",
                ),
                cancel=self.stop,
            )
            vectors = result.vectors.tolist()
            self.store.upsert(
                plan.new,
                [dataclasses.replace(r, vector=v) for r, v in zip(rows, vectors, strict=True)],
            )
            copied.update(r.document_id for r in rows)
            done += len(rows)
            if progress is not None:
                progress(done)
        return copied

    def _settle(self, plan: _Plan, copied: set[str]) -> set[str]:
        """After the switch: wait for jobs that were storing into the old generation, copy
        the documents they finished, and remove documents deleted during the copy."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline and any(
            j["collection"] == plan.collection and j["stage"] == "storing"
            for j in self.catalog.unfinished_jobs()
        ):
            time.sleep(0.2)
        ready = self.catalog.ready_ids(plan.collection)
        late = {d for d in ready - copied if self.store.count_document(plan.new, d) == 0}
        added = self._copy(plan, only=late) if late else set()
        for gone in copied - ready:
            self.store.delete_document(plan.new, gone)
        return added


@dataclass(frozen=True)
class _Plan:
    """One reindex: the store generation read and the one written."""

    collection: str
    engine: EmbeddingEngine
    old: str
    new: str
    dimensions: int
