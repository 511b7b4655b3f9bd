"""The key store against real databases: SQLite and a PostgreSQL server started here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from embedgate.storage.database import MIGRATIONS, migrate, open_database
from embedgate.storage.key_store import KeyRecord, SqlKeyStore
from embedgate.storage.schema import schema_migrations
from support.services import postgres_server


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlKeyStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'e.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = open_database(url)
    with engine.begin() as conn:  # a clean table per test on the shared server
        conn.exec_driver_sql("DELETE FROM api_keys")
    return SqlKeyStore(engine)


def record(key_id: str, **kw: object) -> KeyRecord:
    base = dict(
        id=key_id,
        name="n",
        role="reader",
        digest="d" * 64,
        last4="abcd",
        created_at=datetime.now(UTC),
    )
    return KeyRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_roundtrip(store: SqlKeyStore) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    store.add(
        record("a1", collections=("x", "y"), cidrs=("10.0.0.0/8",), expires_at=expires, rpm=5)
    )
    store.add(record("a2"))
    got = store.get("a1")
    assert got is not None
    assert got.collections == ("x", "y") and got.cidrs == ("10.0.0.0/8",) and got.rpm == 5
    assert got.expires_at is not None and abs((got.expires_at - expires).total_seconds()) < 1
    assert got.expires_at.tzinfo is not None
    assert store.get("a2").collections is None  # type: ignore[union-attr]
    assert store.get("missing") is None
    assert store.count() == 2 and [r.id for r in store.all()] == ["a1", "a2"]


def test_update_and_touch(store: SqlKeyStore) -> None:
    store.add(record("b1"))
    now = datetime.now(UTC)
    assert store.update("b1", revoked_at=now).revoked_at is not None  # type: ignore[union-attr]
    store.touch({"b1": now})
    assert store.get("b1").last_used_at is not None  # type: ignore[union-attr]
    assert not store.get("b1").active(datetime.now(UTC))  # type: ignore[union-attr]


def test_duplicate_ids_are_refused(store: SqlKeyStore) -> None:
    store.add(record("c1"))
    with pytest.raises(Exception):
        store.add(record("c1"))
    assert store.count() == 1


def test_migrations_are_versioned_and_idempotent(store: SqlKeyStore) -> None:
    latest = max(v for v, _ in MIGRATIONS)
    assert migrate(store.database) == latest
    assert migrate(store.database) == latest
    with store.database.connect() as conn:
        versions = [r[0] for r in conn.execute(select(schema_migrations.c.version))]
    assert versions == [v for v, _ in MIGRATIONS]


def test_replicas_starting_together_migrate_one_database_once() -> None:
    """Two gateways of one compose stack start at the same moment on an empty PostgreSQL:
    without a lock both create `schema_migrations` and one dies on the duplicate."""
    import threading

    from sqlalchemy import create_engine

    with postgres_server() as url:
        engines = [create_engine(url) for _ in range(4)]
        start = threading.Barrier(len(engines))
        outcomes: list[object] = []

        def one(engine: object) -> None:
            start.wait()
            try:
                outcomes.append(migrate(engine))  # type: ignore[arg-type]
            except Exception as failed:  # the outcome under test
                outcomes.append(failed)

        threads = [threading.Thread(target=one, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        latest = max(v for v, _ in MIGRATIONS)
        assert outcomes == [latest] * len(engines)
        with engines[0].connect() as conn:
            versions = [r[0] for r in conn.execute(select(schema_migrations.c.version))]
        assert versions == [v for v, _ in MIGRATIONS]
        for engine in engines:
            engine.dispose()
