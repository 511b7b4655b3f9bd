"""Audit records waiting for the audit log to be writable again (in the database, which
every replica shares, so none is lost when one replica's disk is full)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select

from embedgate.storage.schema import audit_backlog


class SqlAuditBacklog:
    def __init__(self, database: Engine) -> None:
        self.database = database

    def hold(self, record: dict[str, Any]) -> None:
        with self.database.begin() as conn:
            conn.execute(audit_backlog.insert().values(record=record))

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        with self.database.connect() as conn:
            rows = conn.execute(select(audit_backlog).order_by(audit_backlog.c.id)).all()
        return [(int(row.id), dict(row.record)) for row in rows]

    def release(self, record_id: int) -> None:
        with self.database.begin() as conn:
            conn.execute(delete(audit_backlog).where(audit_backlog.c.id == record_id))


class MemoryAuditBacklog:
    """The same in memory (tests, and an audit log without a database)."""

    def __init__(self) -> None:
        self._records: dict[int, dict[str, Any]] = {}
        self._next = 1

    def hold(self, record: dict[str, Any]) -> None:
        self._records[self._next] = record
        self._next += 1

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted(self._records.items())

    def release(self, record_id: int) -> None:
        self._records.pop(record_id, None)
