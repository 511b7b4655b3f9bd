"""The catalog's rows as typed records: what crosses from storage to the knowledge base and
on to the API. Dates are ISO-8601 strings (they go out as JSON as they are)."""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic (FastAPI answers) needs it before 3.12


class NearDuplicate(TypedDict):
    """Another ready document with chunks at or above the similarity threshold."""

    document_id: str
    chunks: int
    max_similarity: float
    share: float  # of this document's chunks


class DocumentRow(TypedDict):
    id: str
    collection: str
    filename: str
    content_hash: str
    size_bytes: int
    status: str  # queued | indexing | ready | failed | duplicate
    error: str | None
    chunks: int
    tokens: int
    duplicate_of: str | None
    near_duplicates: list[NearDuplicate]
    language: str | None  # zh | en | other: the main script of its text
    pages: int | None
    created_at: str
    updated_at: str


class DocumentChanges(TypedDict, total=False):
    status: str
    error: str | None
    chunks: int
    tokens: int
    near_duplicates: list[NearDuplicate]
    language: str
    pages: int


class JobRow(TypedDict):
    id: str
    document_id: str
    collection: str
    status: str  # queued | running | succeeded | failed
    stage: str
    progress: float
    error: str | None
    created_at: str
    updated_at: str


class JobChanges(TypedDict, total=False):
    status: str
    stage: str
    progress: float
    error: str | None
