"""Where API key records live: `SqlKeyStore` (SQLite / PostgreSQL) and `MemoryKeyStore` (tests).

Records hold only the HMAC digest and the last four characters of a key, never the key.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from embedgate.storage.schema import api_keys


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    role: str
    digest: str
    last4: str
    created_at: datetime
    collections: tuple[str, ...] | None = None
    cidrs: tuple[str, ...] = ()
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    rotated_from: str | None = None
    models: tuple[str, ...] | None = None  # None: every served model

    def active(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


class KeyStore(Protocol):
    def add(self, record: KeyRecord) -> None: ...

    def get(self, key_id: str) -> KeyRecord | None: ...

    def all(self) -> list[KeyRecord]: ...

    def update(self, key_id: str, **changes: Any) -> KeyRecord | None: ...

    def replace_key(self, new: KeyRecord, *, old_id: str, old_expires_at: datetime) -> None:
        """Rotation in one transaction: the new key exists exactly when the old one ends."""

    def count(self) -> int: ...

    def touch(self, used: dict[str, datetime]) -> None: ...


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SqlKeyStore:
    def __init__(self, database: Engine) -> None:
        self.database = database

    @staticmethod
    def _row(row: Any) -> KeyRecord:
        m = row._mapping
        return KeyRecord(
            id=m["id"],
            name=m["name"],
            role=m["role"],
            digest=m["digest"],
            last4=m["last4"],
            created_at=_utc(m["created_at"]) or datetime.now(UTC),
            collections=tuple(m["collections"]) if m["collections"] is not None else None,
            cidrs=tuple(m["cidrs"] or ()),
            expires_at=_utc(m["expires_at"]),
            revoked_at=_utc(m["revoked_at"]),
            last_used_at=_utc(m["last_used_at"]),
            rpm=m["rpm"],
            tpm=m["tpm"],
            rotated_from=m["rotated_from"],
            models=tuple(m["models"]) if m["models"] is not None else None,
        )

    def add(self, record: KeyRecord) -> None:
        with self.database.begin() as conn:
            conn.execute(api_keys.insert().values(**self._values(record)))

    def replace_key(self, new: KeyRecord, *, old_id: str, old_expires_at: datetime) -> None:
        with self.database.begin() as conn:
            conn.execute(api_keys.insert().values(**self._values(new)))
            conn.execute(
                api_keys.update().where(api_keys.c.id == old_id).values(expires_at=old_expires_at)
            )

    @staticmethod
    def _values(record: KeyRecord) -> dict[str, Any]:
        values = {**record.__dict__}
        values["collections"] = list(record.collections) if record.collections is not None else None
        values["cidrs"] = list(record.cidrs)
        values["models"] = list(record.models) if record.models is not None else None
        return values

    def get(self, key_id: str) -> KeyRecord | None:
        with self.database.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return self._row(row) if row is not None else None

    def all(self) -> list[KeyRecord]:
        with self.database.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [self._row(r) for r in rows]

    def update(self, key_id: str, **changes: Any) -> KeyRecord | None:
        with self.database.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**changes))
        return self.get(key_id)

    def count(self) -> int:
        with self.database.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def touch(self, used: dict[str, datetime]) -> None:
        if not used:
            return
        with self.database.begin() as conn:
            for key_id, when in used.items():
                conn.execute(
                    api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=when)
                )


class MemoryKeyStore:
    """In-process fake with the same behaviour; counts lookups so tests can assert on them."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()
        self.lookups = 0

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            if record.id in self._records:
                raise KeyError(f"duplicate key id {record.id}")
            self._records[record.id] = record

    def replace_key(self, new: KeyRecord, *, old_id: str, old_expires_at: datetime) -> None:
        with self._lock:
            self._records[new.id] = new
            if old_id in self._records:
                self._records[old_id] = replace(self._records[old_id], expires_at=old_expires_at)

    def get(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return self._records.get(key_id)

    def all(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def update(self, key_id: str, **changes: Any) -> KeyRecord | None:
        with self._lock:
            if key_id not in self._records:
                return None
            self._records[key_id] = replace(self._records[key_id], **changes)
            return self._records[key_id]

    def count(self) -> int:
        return len(self._records)

    def touch(self, used: dict[str, datetime]) -> None:
        for key_id, when in used.items():
            self.update(key_id, last_used_at=when)
