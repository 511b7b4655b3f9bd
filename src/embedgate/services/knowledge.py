"""The knowledge base built from the server's settings: vector store, catalog, runner."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine
from embedgate.knowledge.base import AdminAudit, Defaults, KnowledgeBase
from embedgate.knowledge.ingest import IngestRunner, IngestSettings
from embedgate.knowledge.parse_worker import ParseWorker
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.search import Embedders
from embedgate.knowledge.vector_store import MilvusVectorStore, VectorStore
from embedgate.security.secret_files import read_secret_file
from embedgate.storage.catalog import Catalog


def parse_limits(settings: Settings) -> ParseLimits:
    return ParseLimits(
        max_bytes=settings.kb_max_upload_bytes,
        max_pages=settings.kb_max_pages,
        max_docx_uncompressed=settings.kb_max_docx_uncompressed,
        max_docx_ratio=settings.kb_max_docx_ratio,
    )


def open_vector_store(settings: Settings) -> VectorStore:
    """Milvus Lite in the data dir, or the Milvus server at `milvus_uri`: one code path."""
    uri = settings.milvus_uri or str((settings.data_dir / "milvus.db").resolve())
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    if settings.milvus_token_file is not None:
        token = read_secret_file(settings.milvus_token_file).decode().strip()
    return MilvusVectorStore(
        uri,
        token,
        dense_index=settings.kb_dense_index,
        nprobe=settings.kb_dense_nprobe,
        ef=settings.kb_dense_ef,
    )


def build_knowledge(
    settings: Settings,
    *,
    database: Engine,
    store: VectorStore,
    engines: Embedders,
    ready_engine: Callable[[str], EmbeddingEngine | None],
    audit: AdminAudit | None = None,
) -> KnowledgeBase:
    """Not started: the caller starts the runner, and stops it before closing the store."""
    limits = parse_limits(settings)
    runner = IngestRunner(
        Catalog(database),
        store,
        ready_engine,
        IngestSettings(
            uploads=settings.data_dir / "uploads",
            parse_limits=limits,
            parse_timeout_s=settings.kb_parse_timeout_s,
            near_duplicate_threshold=settings.kb_near_duplicate_threshold,
        ),
        ParseWorker(memory_limit=settings.kb_parse_memory_mb * 1024 * 1024),
    )
    defaults = Defaults(settings.kb_chunk_tokens, settings.kb_chunk_overlap)
    return KnowledgeBase(
        runner.catalog,
        runner.store,
        runner,
        defaults,
        limits,
        engines=engines,
        audit=audit,
    )
