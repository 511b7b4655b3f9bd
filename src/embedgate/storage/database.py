"""Opening the database and applying versioned schema migrations.

Migrations are an ordered list of steps; `schema_migrations` records which ran, so upgrading
embedgate upgrades the schema once, on start, under a transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import ExceptionContext

from embedgate.errors import ErrorKind, ServiceError
from embedgate.storage.schema import (
    api_keys,
    audit_backlog,
    kb_collections,
    kb_documents,
    kb_jobs,
    schema_migrations,
    server_facts,
)

log = logging.getLogger(__name__)


def _v1(conn: Connection) -> None:
    api_keys.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    for table in (kb_collections, kb_documents, kb_jobs):
        table.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    server_facts.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    audit_backlog.create(conn, checkfirst=True)


_V7_COLUMNS = {"api_keys": {"models": "JSON"}}
_V6_COLUMNS = {"kb_collections": {"fingerprint": "VARCHAR(32)"}}
_V5_COLUMNS = {
    "kb_collections": {"store_name": "VARCHAR(120)", "fusion": "JSON"},
    "kb_documents": {"language": "VARCHAR(8)", "pages": "INTEGER"},
}


def _add_columns(conn: Connection, tables: dict[str, dict[str, str]]) -> None:
    """Add the columns a table lacks (a table that v2 created on a new database already
    has them)."""
    for table, columns in tables.items():
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        for column, kind in columns.items():
            if column not in present:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


def _v5(conn: Connection) -> None:
    """Knowledge base at scale: the store collection per collection, hybrid weights, and
    each document's language and page count."""
    _add_columns(conn, _V5_COLUMNS)


def _v6(conn: Connection) -> None:
    """Gateway mode: the model fingerprint a collection was built with."""
    _add_columns(conn, _V6_COLUMNS)


def _v7(conn: Connection) -> None:
    """Several models in one server: keys limited to named models."""
    _add_columns(conn, _V7_COLUMNS)


# append only: a released step never changes, a schema change is a new step
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (5, _v5),
    (6, _v6),
    (7, _v7),
]


def database_url(configured: str | None, data_dir: Path) -> str:
    """The configured URL, or SQLite in the data dir: created owner-only (0600; SQLite gives
    its -wal and -shm files the same mode), as it holds key hashes and the catalog."""
    if configured:
        return configured
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = (data_dir / "embedgate.db").resolve()
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    return f"sqlite:///{path}"


CONNECT_TIMEOUT_S = 5
RETRY_AFTER_S = 5


def _unreachable_is_unavailable(context: ExceptionContext) -> ServiceError | None:
    """A lost or refused connection becomes one error kind the API answers with 503 and a
    Retry-After (a database restart is an outage, not a bug); other errors pass unchanged."""
    if context.is_pre_ping:  # the pool is checking a connection: let it reconnect
        return None
    if context.is_disconnect or _connection_failed(context.original_exception):
        return ServiceError(
            ErrorKind.STORAGE_UNAVAILABLE,
            "the database is unreachable; retry shortly",
            retry_after_s=RETRY_AFTER_S,
        )
    return None


def _connection_failed(error: BaseException) -> bool:
    """PostgreSQL refused or dropped the connection (psycopg's OperationalError)."""
    if "psycopg" not in type(error).__module__:
        return False
    import psycopg

    return isinstance(error, psycopg.OperationalError)


def open_database(url: str) -> Engine:
    """Create the SQLAlchemy engine and bring the schema up to date."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    postgres = url.startswith("postgresql")
    # a database that does not answer must fail fast, not hold a request for minutes
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if postgres else {}
    database = create_engine(url, pool_pre_ping=True, future=True, connect_args=connect_args)
    event.listen(database, "handle_error", _unreachable_is_unavailable)
    if database.dialect.name == "sqlite":

        @event.listens_for(database, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    migrate(database)
    return database


def migrate(database: Engine) -> int:
    """Apply pending migrations; returns the schema version."""
    from datetime import UTC, datetime

    with database.begin() as conn:
        _one_migrator_at_a_time(conn)
        if not inspect(conn).has_table("schema_migrations"):
            schema_migrations.create(conn)
        done = {row[0] for row in conn.execute(select(schema_migrations.c.version))}
        for version, step in MIGRATIONS:
            if version in done:
                continue
            log.info("applying schema migration", extra={"version": version})
            step(conn)
            conn.execute(
                schema_migrations.insert().values(version=version, applied_at=datetime.now(UTC))
            )
        return max([v for v, _ in MIGRATIONS] + [0])


# Any constant works: it names "embedgate's schema" among the advisory locks of one database.
_MIGRATION_LOCK = 0x656D6265  # "embe"


def _one_migrator_at_a_time(conn: Connection) -> None:
    """Replicas that start together (compose, Kubernetes) share one database: without a lock
    both see no `schema_migrations` and both create it, and one crashes on the duplicate.
    PostgreSQL's transaction-scoped advisory lock makes the second wait and then find the
    work done. SQLite is one host's file, written by one server (and its CLI after it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def ping(database: Engine) -> None:
    with database.connect() as conn:
        conn.execute(text("SELECT 1"))
