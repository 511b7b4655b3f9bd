"""The knowledge base as the API sees it: collections, uploads, documents, search.

Grants are enforced here, for every call: a caller limited to other collections gets the same
404 as for a collection that does not exist, so existence does not leak.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Principal
from embedgate.knowledge.coverage import WARN_ABOVE, uncovered_share
from embedgate.knowledge.ingest import REINDEX_DOCUMENT, IngestRunner
from embedgate.knowledge.naming import (
    generation_of,
    legacy_store_name,
    rebuild_needed,
    store_name_for,
    store_name_of,
)
from embedgate.knowledge.parsers import ParseLimits, check_upload
from embedgate.knowledge.reindex import Reindexer
from embedgate.knowledge.search import CollectionSearch, Embedders, SearchResult
from embedgate.knowledge.vector_store import VectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo, new_id
from embedgate.storage.records import DocumentRow, JobRow

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_\-]{0,62}$")


@dataclass(frozen=True)
class Defaults:
    chunk_tokens: int = 512
    chunk_overlap: int = 61


def _not_found(what: str) -> ServiceError:
    return ServiceError(ErrorKind.NOT_FOUND, f"{what} not found")


def clean_filename(name: str | None) -> str:
    """Names are data, never paths: kept as given (for display), minus control characters."""
    text = "".join(ch for ch in (name or "upload") if ch >= " " and ch != "\x7f")
    return text[:255] or "upload"


class AdminAudit(Protocol):
    """Where destructive and admin actions are recorded (the security layer's audit log).
    Recording raises when it cannot be done, and then the action does not happen."""

    def admin(
        self, action: str, *, actor: str, target: str | None, before: Any = None, after: Any = None
    ) -> None: ...


class KnowledgeBase:
    """The knowledge base's rules for every surface (HTTP, the in-process CLI, the console's
    API calls): each admin action is recorded here, before it is carried out, whoever asks.

    A collection remembers the model that embedded it; its uploads and queries are embedded
    with that model, whichever model is the server's default, so a collection can move to a
    new model (`start_reindex`) while both are served and every other collection stays."""

    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        runner: IngestRunner,
        defaults: Defaults,
        limits: ParseLimits,
        *,
        engines: Embedders,
        audit: AdminAudit | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.runner = runner
        self.defaults = defaults
        self.limits = limits
        self.engines = engines
        self.audit = audit
        self.searcher = CollectionSearch(catalog, store, engines)

    def _record(
        self, action: str, principal: Principal, target: str, before: Any = None, after: Any = None
    ) -> None:
        if self.audit is not None:
            self.audit.admin(
                action, actor=principal.subject, target=target, before=before, after=after
            )

    # --- collections -------------------------------------------------------------------------
    def create_collection(
        self,
        principal: Principal,
        name: str,
        *,
        model: str | None = None,
        description: str = "",
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        dimensions: int | None = None,
    ) -> dict[str, Any]:
        if not NAME.match(name):
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                "collection names are 1-63 letters, digits, '-' or '_', starting with a letter "
                "or digit",
                "name",
            )
        if not principal.may_see(name):
            raise ServiceError(ErrorKind.FORBIDDEN, "this key may not use that collection name")
        if self.catalog.collection(name) is not None:
            raise ServiceError(ErrorKind.CONFLICT, f"collection {name!r} already exists", "name")
        tokens = chunk_tokens or self.defaults.chunk_tokens
        overlap = self.defaults.chunk_overlap if chunk_overlap is None else chunk_overlap
        if not 16 <= tokens <= 8192:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST, "chunk_tokens must be 16-8192", "chunk_tokens"
            )
        if not 0 <= overlap <= tokens // 2:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                "chunk_overlap must be 0 to half of chunk_tokens",
                "chunk_overlap",
            )
        engine = self.engines(model, principal)
        engine.check_dimensions(dimensions)
        info = CollectionInfo(
            name=name,
            description=description[:2000],
            model=engine.name,
            dimensions=dimensions or engine.spec.native_dimensions,
            chunk_tokens=tokens,
            chunk_overlap=overlap,
            owner=principal.subject,
            store_name=store_name_for(name, 1),
            fingerprint=engine.describe().fingerprint,
        )
        assert info.store_name is not None
        self.store.ensure_collection(info.store_name, info.dimensions)
        self.catalog.add_collection(info)
        return self.describe(principal, name)

    def get(self, principal: Principal, name: str) -> CollectionInfo:
        info = self.catalog.collection(name) if principal.may_see(name) else None
        if info is None:
            raise _not_found(f"collection {name!r}")
        return info

    def store_of(self, info: CollectionInfo) -> str:
        """The vector-store collection that holds its chunks; a collection made before 0.5
        must be rebuilt first."""
        return store_name_of(info)

    def describe(self, principal: Principal, name: str) -> dict[str, Any]:
        info = self.get(principal, name)
        docs = self.catalog.documents(name)
        languages = self.catalog.chunks_by_language(name)
        warnings = []
        if info.store_name is None:
            warnings.append(rebuild_needed(name).message)
        uncovered = uncovered_share(self.runner.models.engine_if_ready(info.model), languages)
        if uncovered > WARN_ABOVE:
            warnings.append(
                f"{uncovered:.0%} of the chunks are in a language the model {info.model!r} does "
                "not cover; dense search will be weak, so hybrid search leans on lexical"
            )
        return {
            **{k: v for k, v in info.__dict__.items() if k not in ("extra", "store_name")},
            "documents": len(docs),
            "chunks": sum(languages.values()),
            "languages": languages,
            "warnings": warnings,
        }

    def list_collections(self, principal: Principal) -> list[dict[str, Any]]:
        return [
            self.describe(principal, c.name)
            for c in self.catalog.collections()
            if principal.may_see(c.name)
        ]

    def delete_collection(self, principal: Principal, name: str) -> None:
        info = self.get(principal, name)
        self._record("collection.delete", principal, name, before=self.describe(principal, name))
        self.runner.cancel_collection(name)
        for doc in self.catalog.documents(name):
            self.runner.upload_path(doc["id"]).unlink(missing_ok=True)
        self.store.drop_collection(info.store_name or legacy_store_name(name))
        self.catalog.delete_collection(name)

    # --- documents ---------------------------------------------------------------------------
    def upload(
        self, principal: Principal, name: str, filename: str | None, data: bytes
    ) -> dict[str, Any]:
        """Cheap checks now (type, size); the rest, archives included, in a job."""
        self.store_of(self.get(principal, name))
        shown = clean_filename(filename)
        check_upload(shown, data, self.limits)
        digest = hashlib.sha256(data).hexdigest()
        doc_id, job_id = new_id("doc"), new_id("job")
        existing = self.catalog.ready_with_hash(name, digest)  # an exact duplicate's original
        if existing is None:  # the bytes first, so a queued document always has its upload
            self.runner.settings.uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.runner.upload_path(doc_id).write_bytes(data)
        self.catalog.add_document(
            doc_id,
            collection=name,
            filename=shown,
            digest=digest,
            size=len(data),
            status="queued" if existing is None else "duplicate",
            duplicate_of=existing,
        )
        if existing is None:
            self.catalog.add_job(job_id, document_id=doc_id, collection=name)
            self.runner.submit(job_id, document_id=doc_id, collection=name)
        else:  # nothing to embed again
            self.catalog.add_job(job_id, document_id=doc_id, collection=name, status="succeeded")
            self.catalog.update_job(job_id, stage="duplicate")
        return {
            "job": self.job(principal, job_id),
            "document": self.document(principal, name, doc_id),
        }

    def document(self, principal: Principal, name: str, doc_id: str) -> DocumentRow:
        self.get(principal, name)
        doc = self.catalog.document(doc_id)
        if doc is None or doc["collection"] != name:
            raise _not_found(f"document {doc_id!r}")
        return doc

    def documents(self, principal: Principal, name: str) -> list[DocumentRow]:
        self.get(principal, name)
        return self.catalog.documents(name)

    def delete_document(self, principal: Principal, name: str, doc_id: str) -> None:
        before = self.document(principal, name, doc_id)
        self._record("document.delete", principal, doc_id, before=before)
        self.runner.cancel_document(doc_id)
        info = self.get(principal, name)
        self.store.delete_document(info.store_name or legacy_store_name(name), doc_id)
        self.runner.upload_path(doc_id).unlink(missing_ok=True)
        self.catalog.delete_document(doc_id)

    def duplicates(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        """Exact duplicates (same content hash) and near-duplicates found at ingest."""
        out = []
        for doc in self.documents(principal, name):
            if doc["duplicate_of"]:
                out.append(
                    {
                        "document_id": doc["id"],
                        "filename": doc["filename"],
                        "kind": "exact",
                        "of": [{"document_id": doc["duplicate_of"], "max_similarity": 1.0}],
                    }
                )
            elif doc["near_duplicates"]:
                out.append(
                    {
                        "document_id": doc["id"],
                        "filename": doc["filename"],
                        "kind": "near",
                        "of": doc["near_duplicates"],
                    }
                )
        return out

    def cancel_job(self, principal: Principal, job_id: str) -> JobRow:
        """Call a queued or running job off: its work stops within a step, its document
        fails with the reason, its partial chunks are removed."""
        job = self.job(principal, job_id)
        if job["status"] not in ("queued", "running"):
            raise ServiceError(
                ErrorKind.CONFLICT, f"job {job_id!r} has already {job['status']}", "job_id"
            )
        self._record("job.cancel", principal, job_id)
        message = f"cancelled by {principal.subject}"
        self.catalog.update_job(job_id, status="cancelled", stage="cancelled", error=message)
        if job["document_id"] != REINDEX_DOCUMENT:
            self.catalog.update_document(job["document_id"], status="failed", error=message)
        self.runner.cancel_job(job_id)
        return self.job(principal, job_id)

    def set_fusion(
        self, principal: Principal, name: str, fusion: dict[str, float] | None
    ) -> dict[str, Any]:
        self.get(principal, name)
        self.catalog.set_fusion(name, fusion)
        return self.describe(principal, name)

    def start_reindex(self, principal: Principal, name: str, model: str | None = None) -> JobRow:
        """Rebuild the collection's index in the background with `model` (default: the
        collection's own model when served, else the server's default model); search keeps
        serving the current index, with its own model, until the switch."""
        info = self.get(principal, name)
        try:
            if model is not None:
                engine = self.engines(model, principal)
            else:
                try:
                    engine = self.engines(info.model, principal)
                except ServiceError as exc:
                    if exc.kind is not ErrorKind.MODEL_NOT_FOUND:
                        raise
                    engine = self.engines(None, principal)
        except ServiceError as exc:
            if exc.kind is not ErrorKind.MODEL_NOT_FOUND:
                raise
            raise ServiceError(
                ErrorKind.CONFLICT,
                f"this server does not serve {model!r}; start it with --model {model} (beside "
                "the current model) to reindex with that model",
                "model",
            ) from None
        if any(
            j["collection"] == name and j["document_id"] == REINDEX_DOCUMENT
            for j in self.catalog.unfinished_jobs()
        ):
            raise ServiceError(ErrorKind.CONFLICT, f"collection {name!r} is being reindexed")
        self._record(
            "collection.reindex",
            principal,
            name,
            before={"model": info.model, "generation": generation_of(info.store_name)},
            after={"model": engine.name},
        )
        job_id = new_id("job")
        self.catalog.add_job(job_id, document_id=REINDEX_DOCUMENT, collection=name)
        self.catalog.update_job(job_id, status="running", stage="reindexing")

        def work() -> None:
            try:
                result = Reindexer(self.catalog, self.store, self.runner.stop_event).run(
                    info,
                    engine,
                    progress=lambda n: self.catalog.update_job(
                        job_id, stage=f"reindexing: {n} chunks"
                    ),
                )
            except Exception as exc:
                message = exc.message if isinstance(exc, ServiceError) else repr(exc)
                self.catalog.update_job(job_id, status="failed", stage="failed", error=message)
                return
            self.catalog.update_job(
                job_id,
                status="succeeded",
                stage=f"done: {result.chunks} chunks in {result.seconds:.1f} s",
                progress=1.0,
            )

        self.runner.run_task(work, name=f"embedgate-reindex-{name}")
        return self.job(principal, job_id)

    def job(self, principal: Principal, job_id: str) -> JobRow:
        job = self.catalog.job(job_id)
        if job is None or not principal.may_see(job["collection"]):
            raise _not_found(f"job {job_id!r}")
        return job

    # --- search ------------------------------------------------------------------------------

    # --- search ------------------------------------------------------------------------------
    async def search(self, principal: Principal, name: str, **options: Any) -> SearchResult:
        """The best chunks of collection `name` for a query (see `CollectionSearch.search`)."""
        info = await asyncio.to_thread(self.get, principal, name)  # the catalog: off the loop
        self.store_of(info)
        return await self.searcher.search(principal, info, **options)
