"""The audit log as a JSON-lines file: chained appends shared by writers on one host, and
recovery of a torn last line.

Writers share the file safely (an exclusive `flock` around read-tail + append). A crash or a
full disk in the middle of an append can leave a torn last line; left there, it breaks the
chain for good (every later append reads a tail that is not JSON). On open, a torn tail is
moved aside to a side file and an `audit.recovered` record in the chain says so, so
`audit verify` passes and the torn bytes are kept for inspection.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedgate.security.audit import GENESIS, KEYED, canonical, chain_hash, now_iso

log = logging.getLogger(__name__)

TAIL_BYTES = 1 << 20  # a record is far smaller; a torn line is found within this


class FileAuditSink:
    """`key`: the chain's key (`audit.chain_key`); None writes an unkeyed chain (tests)."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self.key = key
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open()
        self._recover_torn_tail()
        if key is not None:
            self._start_keyed_chain()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_CREAT | os.O_APPEND | os.O_RDWR, 0o600)
        self._file = os.fdopen(fd, "a+b", buffering=0)
        self._known_size = -1
        self._last = (0, GENESIS)

    def _start_keyed_chain(self) -> None:
        """A file from before chains were keyed is closed and renamed; the new keyed chain
        starts with a record naming it and its last hash (verify it with --legacy)."""
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return
        self._file.seek(max(0, size - 65536))
        last = json.loads(self._file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
        if last.get("chain") == KEYED:
            return
        legacy = self.path.with_name(
            f"{self.path.name}.legacy-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
        )
        self._file.close()
        os.replace(self.path, legacy)
        self._open()
        log.warning(
            "the audit log was unkeyed; started a keyed chain", extra={"legacy": legacy.name}
        )
        self.append(
            {
                "ts": now_iso(),
                "kind": "audit",
                "action": "audit.keyed",
                "legacy_file": legacy.name,
                "legacy_last": f"{last.get('seq')}:{last.get('hash')}",
            },
            durable=True,
        )

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

    def _recover_torn_tail(self) -> None:
        with self._lock:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                torn = self._cut_torn_tail()
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        if torn is not None:
            side, size = torn
            log.error("the audit log ended in a torn line; moved it aside", extra={"side": side})
            self.append(
                {
                    "ts": now_iso(),
                    "kind": "audit",
                    "action": "audit.recovered",
                    "side_file": side,
                    "torn_bytes": size,
                },
                durable=True,
            )

    def _cut_torn_tail(self) -> tuple[str, int] | None:
        """Move an incomplete or unreadable last line to a side file and cut it off."""
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return None
        start = max(0, size - TAIL_BYTES)
        self._file.seek(start)
        data = self._file.read(size - start)
        body = data[:-1] if data.endswith(b"\n") else data
        cut = body.rfind(b"\n") + 1  # where the last line starts, within `data`
        last = body[cut:]
        try:
            json.loads(last)
        except ValueError:
            pass
        else:
            if not data.endswith(b"\n"):  # a whole record whose newline was lost
                self._file.write(b"\n")
                os.fsync(self._file.fileno())
            return None
        offset = start + cut
        side = self.path.with_name(
            f"{self.path.name}.torn-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
        )
        fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data[cut:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.truncate(self._file.fileno(), offset)
        os.fsync(self._file.fileno())
        self._known_size = -1
        return side.name, size - offset

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]:
        with self._lock:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                size = os.fstat(self._file.fileno()).st_size
                if size != self._known_size:  # another writer appended since our last line
                    self._last = self._tail()
                seq, prev = self._last
                full = {"seq": seq + 1, **record, "prev": prev}
                if self.key is not None:
                    full["chain"] = KEYED
                full["hash"] = chain_hash(prev, full, self.key)
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
