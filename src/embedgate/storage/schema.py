"""Every table embedgate keeps in its database (SQLite or PostgreSQL), in one place."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# facts a deployment's replicas must agree on, e.g. a keyed check value of the pepper
server_facts = Table(
    "server_facts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# audit records that could not be written to the audit log (revocations go ahead when the
# log is unwritable); moved into the log's chain as soon as it can be written again
audit_backlog = Table(
    "audit_backlog",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record", JSON, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("collections", JSON, nullable=True),
    Column("cidrs", JSON, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("rotated_from", String(32), nullable=True),
    Column("models", JSON, nullable=True),  # the models it may use; NULL: every model
)

kb_collections = Table(
    "kb_collections",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("model", String(200), nullable=False),
    Column("dimensions", Integer, nullable=False),
    Column("chunk_tokens", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # the vector-store collection that holds its chunks (NULL: made before 0.5, needs a
    # reindex); a reindex fills a new one and switches this in one transaction
    Column("store_name", String(120), nullable=True),
    Column("fusion", JSON, nullable=True),  # hybrid weights set for this collection
    # gateway mode: a hash of the upstream model's vector for a probe text, so that a
    # collection is never searched or filled with vectors of another model of the same name
    Column("fingerprint", String(32), nullable=True),
)

kb_documents = Table(
    "kb_documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("collection", String(64), nullable=False, index=True),
    Column("filename", Text, nullable=False),
    Column("content_hash", String(64), nullable=False, index=True),
    Column("size_bytes", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("chunks", Integer, nullable=False, default=0),
    Column("tokens", Integer, nullable=False, default=0),
    Column("duplicate_of", String(32), nullable=True),
    Column("near_duplicates", JSON, nullable=False, default=list),
    Column("language", String(8), nullable=True),  # main script of its text: zh, en, other
    Column("pages", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

kb_jobs = Table(
    "kb_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("document_id", String(32), nullable=False, index=True),
    Column("collection", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("stage", String(32), nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
