"""Opening the database and applying versioned schema migrations.

Migrations are an ordered list of steps; `schema_migrations` records which ran, so upgrading
embedgate upgrades the schema once, on start, under a transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    inspect,
    select,
    text,
)

log = logging.getLogger(__name__)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
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
)


def _v1(conn: Connection) -> None:
    api_keys.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [(1, _v1)]


def database_url(configured: str | None, data_dir: Path) -> str:
    if configured:
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'embedgate.db').resolve()}"


def open_database(url: str) -> Engine:
    """Create the engine and bring the schema up to date."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_pre_ping=True, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    migrate(engine)
    return engine


def migrate(engine: Engine) -> int:
    """Apply pending migrations; returns the schema version."""
    from datetime import UTC, datetime

    with engine.begin() as conn:
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


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
