"""The knowledge-base catalog: collections, documents and ingest jobs (SQL).

The vector store holds chunks; this holds what a person manages and what makes ingestion
crash-safe: a document is `ready` only after all its chunks are stored, and a job's state says
what to clean up or resume after a restart.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Unpack, cast

from sqlalchemy import Engine, func, select

from embedgate.storage.records import DocumentChanges, DocumentRow, JobChanges, JobRow
from embedgate.storage.schema import kb_collections as collections
from embedgate.storage.schema import kb_documents as documents
from embedgate.storage.schema import kb_jobs as jobs

UNFINISHED = ("queued", "running")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    description: str
    model: str
    dimensions: int
    chunk_tokens: int
    chunk_overlap: int
    owner: str
    created_at: str = ""
    store_name: str | None = None  # None: made before 0.5 (reindex to use it)
    fusion: dict[str, float] | None = None
    fingerprint: str | None = None  # gateway mode: the upstream model's fingerprint
    extra: dict[str, Any] = field(default_factory=dict)


class Catalog:
    def __init__(self, database: Engine) -> None:
        self.database = database

    # --- collections -------------------------------------------------------------------------
    def add_collection(self, info: CollectionInfo) -> None:
        values = {k: v for k, v in info.__dict__.items() if k not in ("extra", "created_at")}
        with self.database.begin() as conn:
            conn.execute(collections.insert().values(**values, created_at=_now()))

    def collection(self, name: str) -> CollectionInfo | None:
        with self.database.connect() as conn:
            row = conn.execute(select(collections).where(collections.c.name == name)).first()
        if row is None:
            return None
        m = dict(row._mapping)
        m["created_at"] = _iso(m["created_at"])
        return CollectionInfo(**m)

    def collections(self) -> list[CollectionInfo]:
        with self.database.connect() as conn:
            rows = conn.execute(select(collections.c.name).order_by(collections.c.name)).all()
        return [c for c in (self.collection(r[0]) for r in rows) if c is not None]

    def switch_store(
        self,
        name: str,
        *,
        old: str | None,
        new: str,
        model: str,
        dimensions: int,
        fingerprint: str | None = None,
    ) -> bool:
        """Point the collection at another store collection, if it still points at `old`
        (one statement: searches see the old store or the new one, never a mix)."""
        with self.database.begin() as conn:
            result = conn.execute(
                collections.update()
                .where(
                    collections.c.name == name,
                    collections.c.store_name.is_(None)
                    if old is None
                    else collections.c.store_name == old,
                )
                .values(store_name=new, model=model, dimensions=dimensions, fingerprint=fingerprint)
            )
        return bool(result.rowcount)

    def set_fusion(self, name: str, fusion: dict[str, float] | None) -> None:
        with self.database.begin() as conn:
            conn.execute(
                collections.update().where(collections.c.name == name).values(fusion=fusion)
            )

    def delete_collection(self, name: str) -> None:
        with self.database.begin() as conn:
            conn.execute(jobs.delete().where(jobs.c.collection == name))
            conn.execute(documents.delete().where(documents.c.collection == name))
            conn.execute(collections.delete().where(collections.c.name == name))

    # --- documents ---------------------------------------------------------------------------
    def add_document(
        self,
        doc_id: str,
        *,
        collection: str,
        filename: str,
        digest: str,
        size: int,
        status: str,
        duplicate_of: str | None = None,
    ) -> None:
        now = _now()
        with self.database.begin() as conn:
            conn.execute(
                documents.insert().values(
                    id=doc_id,
                    collection=collection,
                    filename=filename,
                    content_hash=digest,
                    size_bytes=size,
                    status=status,
                    chunks=0,
                    tokens=0,
                    duplicate_of=duplicate_of,
                    near_duplicates=[],
                    created_at=now,
                    updated_at=now,
                )
            )

    def update_document(self, doc_id: str, **changes: Unpack[DocumentChanges]) -> None:
        with self.database.begin() as conn:
            conn.execute(
                documents.update()
                .where(documents.c.id == doc_id)
                .values(**changes, updated_at=_now())
            )

    def document(self, doc_id: str) -> DocumentRow | None:
        with self.database.connect() as conn:
            row = conn.execute(select(documents).where(documents.c.id == doc_id)).first()
        return _document(row._mapping) if row is not None else None

    def documents(self, collection: str) -> list[DocumentRow]:
        with self.database.connect() as conn:
            rows = conn.execute(
                select(documents)
                .where(documents.c.collection == collection)
                .order_by(documents.c.created_at)
            ).all()
        return [_document(r._mapping) for r in rows]

    def ready_with_hash(self, collection: str, digest: str) -> str | None:
        with self.database.connect() as conn:
            row = conn.execute(
                select(documents.c.id).where(
                    documents.c.collection == collection,
                    documents.c.content_hash == digest,
                    documents.c.status.in_(("ready", "queued", "running", "indexing")),
                )
            ).first()
        return str(row[0]) if row is not None else None

    def ready_ids(self, collection: str) -> set[str]:
        with self.database.connect() as conn:
            rows = conn.execute(
                select(documents.c.id).where(
                    documents.c.collection == collection, documents.c.status == "ready"
                )
            ).all()
        return {str(r[0]) for r in rows}

    def ready_filenames(self, collection: str, ids: set[str]) -> dict[str, str]:
        """File names of those of `ids` that are ready documents of the collection."""
        if not ids:
            return {}
        with self.database.connect() as conn:
            rows = conn.execute(
                select(documents.c.id, documents.c.filename).where(
                    documents.c.collection == collection,
                    documents.c.status == "ready",
                    documents.c.id.in_(sorted(ids)),
                )
            ).all()
        return {str(r[0]): str(r[1]) for r in rows}

    def chunks_by_language(self, collection: str) -> dict[str, int]:
        """Chunks of the collection's ready documents per language (zh, en, other)."""
        with self.database.connect() as conn:
            rows = conn.execute(
                select(documents.c.language, func.sum(documents.c.chunks))
                .where(documents.c.collection == collection, documents.c.status == "ready")
                .group_by(documents.c.language)
            ).all()
        counts: dict[str, int] = {}
        for language, chunks in rows:
            key = language or "other"
            counts[key] = counts.get(key, 0) + int(chunks or 0)
        return counts

    def delete_document(self, doc_id: str) -> None:
        with self.database.begin() as conn:
            conn.execute(jobs.delete().where(jobs.c.document_id == doc_id))
            conn.execute(documents.delete().where(documents.c.id == doc_id))

    # --- jobs --------------------------------------------------------------------------------
    def add_job(
        self, job_id: str, *, document_id: str, collection: str, status: str = "queued"
    ) -> None:
        now = _now()
        with self.database.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    document_id=document_id,
                    collection=collection,
                    status=status,
                    stage="queued" if status == "queued" else status,
                    progress=0.0 if status == "queued" else 1.0,
                    created_at=now,
                    updated_at=now,
                )
            )

    def update_job(self, job_id: str, **changes: Unpack[JobChanges]) -> None:
        with self.database.begin() as conn:
            conn.execute(
                jobs.update().where(jobs.c.id == job_id).values(**changes, updated_at=_now())
            )

    def advance_job(self, job_id: str, **changes: Unpack[JobChanges]) -> bool:
        """Update a job that is still queued or running (never one already cancelled or
        failed by someone else); returns whether it was."""
        with self.database.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(UNFINISHED))
                .values(**changes, updated_at=_now())
            )
        return bool(result.rowcount)

    def finish_document_job(
        self, job_id: str, *, doc_id: str, **changes: Unpack[DocumentChanges]
    ) -> bool:
        """The job succeeded and its document changed, in one transaction: a client that
        sees the job done always reads the document done. False (and nothing changed) when
        the job was cancelled or failed meanwhile."""
        with self.database.begin() as conn:
            advanced = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(UNFINISHED))
                .values(status="succeeded", stage="done", progress=1.0, updated_at=_now())
            )
            if not advanced.rowcount:
                return False
            conn.execute(
                documents.update()
                .where(documents.c.id == doc_id)
                .values(**changes, updated_at=_now())
            )
        return True

    def job(self, job_id: str) -> JobRow | None:
        with self.database.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return _job(row._mapping) if row is not None else None

    def unfinished_jobs(self) -> list[JobRow]:
        with self.database.connect() as conn:
            rows = conn.execute(
                select(jobs).where(jobs.c.status.in_(UNFINISHED)).order_by(jobs.c.created_at)
            ).all()
        return [_job(r._mapping) for r in rows]


def _document(row: Mapping[Any, Any]) -> DocumentRow:
    return cast(DocumentRow, {k: _iso(v) for k, v in row.items()})


def _job(row: Mapping[Any, Any]) -> JobRow:
    return cast(JobRow, {k: _iso(v) for k, v in row.items()})
