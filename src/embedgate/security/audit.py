"""The tamper-evident audit log: one JSON object per line, each carrying the hash of the one
before it, so an edited, deleted or reordered line breaks the chain at that line.

Records never contain input text. Writers on one host share the file safely (an exclusive
`flock` around read-tail + append). Admin actions are written and fsynced *before* they take
effect, so if the record cannot be written the action does not happen (fail closed).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

GENESIS = "0" * 64


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev: str, record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(prev.encode() + canonical(body)).hexdigest()


class AuditSink(Protocol):
    """Where chained records go. `append` fills in seq / prev / hash and returns the record."""

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]: ...

    def lines(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class FileAuditSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_RDWR, 0o600)
        self._file = os.fdopen(fd, "a+b", buffering=0)
        self._lock = threading.Lock()
        self._known_size = -1
        self._last = (0, GENESIS)

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last line, reading only the end of the file."""
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return 0, GENESIS
        chunk = min(size, 65536)
        self._file.seek(size - chunk)
        last = self._file.read(chunk).rstrip(b"\n").rsplit(b"\n", 1)[-1]
        data = json.loads(last)
        return int(data["seq"]), str(data["hash"])

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]:
        with self._lock:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                size = os.fstat(self._file.fileno()).st_size
                if size != self._known_size:  # another writer appended since our last line
                    self._last = self._tail()
                seq, prev = self._last
                full = {"seq": seq + 1, **record, "prev": prev}
                full["hash"] = chain_hash(prev, full)
                line = canonical(full) + b"\n"
                self._file.write(line)
                if durable:
                    os.fsync(self._file.fileno())
                self._known_size = size + len(line)
                self._last = (seq + 1, full["hash"])
                return full
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def lines(self) -> Iterator[str]:
        with self.path.open("r", encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle)

    def close(self) -> None:
        self._file.close()


class MemoryAuditSink:
    """In-process fake; `broken = True` makes every write fail, as a full disk would."""

    def __init__(self) -> None:
        self.records: list[str] = []
        self.broken = False

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]:
        if self.broken:
            raise OSError("audit sink unavailable")
        prev = json.loads(self.records[-1])["hash"] if self.records else GENESIS
        full = {"seq": len(self.records) + 1, **record, "prev": prev}
        full["hash"] = chain_hash(prev, full)
        self.records.append(canonical(full).decode())
        return full

    def lines(self) -> Iterator[str]:
        yield from list(self.records)

    def close(self) -> None:
        """Records stay readable: a test inspects them after the app stopped."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    bad_line: int | None = None
    reason: str = ""


def verify_chain(lines: Iterable[str]) -> VerifyResult:
    """Check every line's hash and link; name the first line that does not fit."""
    prev, seq, count = GENESIS, 0, 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            return VerifyResult(False, count, number, "empty line")
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return VerifyResult(False, count, number, "not valid JSON")
        if record.get("prev") != prev:
            return VerifyResult(False, count, number, "does not link to the previous line")
        if record.get("seq") != seq + 1:
            return VerifyResult(False, count, number, f"sequence {record.get('seq')} != {seq + 1}")
        if chain_hash(prev, record) != record.get("hash"):
            return VerifyResult(False, count, number, "content does not match its hash")
        prev, seq, count = record["hash"], seq + 1, count + 1
    return VerifyResult(True, count)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """The service's audit trail on top of a sink (None: auditing switched off, in which case
    admin actions are refused, exactly as when the sink fails)."""

    def __init__(self, sink: AuditSink | None) -> None:
        self.sink = sink

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def request(self, fields: dict[str, Any]) -> None:
        """A served request. Failing to record it is logged loudly, not fatal."""
        if self.sink is None:
            return
        try:
            self.sink.append({"ts": now_iso(), "kind": "request", **fields}, durable=False)
        except Exception:
            log.error("audit record could not be written", exc_info=True)

    def admin(
        self,
        action: str,
        *,
        actor: str,
        target: str | None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """An admin or key action; raises (so the action is refused) when it cannot be recorded."""
        record = {
            "ts": now_iso(),
            "kind": "admin",
            "action": action,
            "key_id": actor,
            "target": target,
            "before": before,
            "after": after,
        }
        try:
            if self.sink is None:
                raise OSError("auditing is switched off (audit = false)")
            self.sink.append(record, durable=True)
        except Exception as exc:
            log.error("audit unavailable; refusing admin action", extra={"action": action})
            raise ServiceError(
                ErrorKind.AUDIT_UNAVAILABLE,
                "the audit log cannot be written, so this action was refused; check the "
                "audit file's disk and permissions",
            ) from exc

    def query(
        self,
        *,
        key_id: str | None = None,
        route: str | None = None,
        status: int | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered; `since` / `until` are ISO-8601 timestamps."""
        out: list[dict[str, Any]] = []
        for line in self.sink.lines() if self.sink is not None else ():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key_id is not None and record.get("key_id") != key_id:
                continue
            if route is not None and record.get("route") != route:
                continue
            if status is not None and record.get("status") != status:
                continue
            if since is not None and str(record.get("ts", "")) < since:
                continue
            if until is not None and str(record.get("ts", "")) > until:
                continue
            out.append(record)
        return list(reversed(out))[:limit]
