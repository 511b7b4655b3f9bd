"""The tamper-evident audit log: one JSON object per line, each carrying the hash of the one
before it, so an edited, deleted or reordered line breaks the chain at that line.

Records never contain input text. The file itself is `audit_file.FileAuditSink`. Admin
actions are written and fsynced *before* they take effect, so if the record cannot be
written the action does not happen (fail closed), except revocation, the safe direction:
it goes ahead and its record waits in a backlog (the database) until the log can be written.
With `fail_closed` requests (`audit_failure_mode`), a log that cannot be written turns
requests away with 503 until a write succeeds again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

GENESIS = "0" * 64


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


KEYED = "hmac-sha256"  # the `chain` field of a record whose link is keyed


def chain_key(pepper: bytes) -> bytes:
    """The chain's key, derived from the server's pepper (kept outside the log): without it,
    whoever can write the file cannot delete a record and recompute the links."""
    return hmac.new(pepper, b"embedgate audit chain v1", hashlib.sha256).digest()


def chain_hash(prev: str, record: dict[str, Any], key: bytes | None = None) -> str:
    """The link: HMAC-SHA256 under `key` for keyed records, plain SHA-256 for records
    written before chains were keyed (and by unkeyed test sinks)."""
    body = canonical({k: v for k, v in record.items() if k != "hash"})
    if key is not None and record.get("chain") == KEYED:
        return hmac.new(key, prev.encode() + body, hashlib.sha256).hexdigest()
    return hashlib.sha256(prev.encode() + body).hexdigest()


class AuditSink(Protocol):
    """Where chained records go. `append` fills in seq / prev / hash and returns the record."""

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]: ...

    def lines(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class MemoryAuditSink:
    """In-process fake; `broken = True` makes every write fail, as a full disk would."""

    def __init__(self, key: bytes | None = None) -> None:
        self.records: list[str] = []
        self.broken = False
        self.key = key

    def append(self, record: dict[str, Any], durable: bool) -> dict[str, Any]:
        if self.broken:
            raise OSError("audit sink unavailable")
        prev = json.loads(self.records[-1])["hash"] if self.records else GENESIS
        full = {"seq": len(self.records) + 1, **record, "prev": prev}
        if self.key is not None:
            full["chain"] = KEYED
        full["hash"] = chain_hash(prev, full, self.key)
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


def verify_chain(
    lines: Iterable[str],
    key: bytes | None = None,
    *,
    legacy: bool = False,
    checkpoint: tuple[int, str] | None = None,
) -> VerifyResult:
    """Check every line's link; name the first line that does not fit. With `key`, every
    record must be keyed (an unkeyed one is a forgery or a pre-key file: pass `legacy`);
    a `checkpoint` (seq, hash) printed earlier must still be in the chain, so a cut-off
    tail is found too."""
    prev, seq, count = GENESIS, 0, 0
    seen_checkpoint = checkpoint is None
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
        keyed = record.get("chain") == KEYED
        if key is not None and not keyed and not legacy:
            return VerifyResult(
                False, count, number, "not keyed (a forged line, or a pre-key file: --legacy)"
            )
        if keyed and key is None:
            return VerifyResult(False, count, number, "keyed: verifying needs the pepper")
        if chain_hash(prev, record, key) != record.get("hash"):
            return VerifyResult(False, count, number, "content does not match its hash")
        prev, seq, count = record["hash"], seq + 1, count + 1
        if checkpoint is not None and (seq, prev) == checkpoint:
            seen_checkpoint = True
    if not seen_checkpoint:
        assert checkpoint is not None
        return VerifyResult(
            False, count, count, f"checkpoint {checkpoint[0]} is missing: the log was cut"
        )
    return VerifyResult(True, count)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditBacklog(Protocol):
    """Where records wait while the sink cannot be written (storage's `audit_backlog`)."""

    def hold(self, record: dict[str, Any]) -> None: ...

    def pending(self) -> list[tuple[int, dict[str, Any]]]: ...

    def release(self, record_id: int) -> None: ...


class AuditLog:
    """The service's audit trail on top of a sink (None: auditing switched off, in which case
    admin actions are refused, exactly as when the sink fails).

    `fail_closed`: after a request's record could not be written, further requests are
    refused (`refuses_requests`) until a write succeeds again; otherwise (`log_only`) they are
    served and the failure is only logged. `backlog` keeps records of safe-direction admin
    actions (revocation) that could not be written, and feeds them into the chain later."""

    def __init__(
        self,
        sink: AuditSink | None,
        *,
        fail_closed: bool = True,
        backlog: AuditBacklog | None = None,
    ) -> None:
        self.sink = sink
        self.fail_closed = fail_closed
        self.backlog = backlog
        self.failing: str | None = None  # why the last write failed, until one succeeds
        self.write_failures = 0  # records that could not be written, since start (metrics)

    def refuses_requests(self) -> bool:
        """True while requests must be turned away (fail_closed and the log is failing).
        Each call while failing first tries to write an `audit.resumed` record, so the
        first request after the disk is freed is served, and the chain shows the gap."""
        if self.failing is None or self.sink is None:
            return False
        try:
            self._append(
                {
                    "ts": now_iso(),
                    "kind": "audit",
                    "action": "audit.resumed",
                    "after": self.failing,
                },
                durable=True,
                probe=True,
            )
        except Exception:
            return self.fail_closed
        return False

    def _append(self, record: dict[str, Any], *, durable: bool, probe: bool = False) -> None:
        """`probe`: the `audit.resumed` marker tried while failing; its failure loses no
        record, so it is not counted."""
        assert self.sink is not None
        try:
            self.sink.append(record, durable=durable)
        except Exception as exc:
            self.failing = f"{type(exc).__name__}: {exc}"
            self.write_failures += 0 if probe else 1
            raise
        if self.failing is not None:
            log.warning("the audit log can be written again")
        self.failing = None
        self._flush_backlog()

    def _flush_backlog(self) -> None:
        """Backlogged records join the chain (marked so) once the log can be written."""
        if self.backlog is None or self.sink is None:
            return
        try:
            pending = self.backlog.pending()
        except Exception:
            return  # the database is down too; the next write tries again
        for record_id, record in pending:
            self.sink.append({**record, "backlogged": True}, durable=True)
            self.backlog.release(record_id)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def request(self, fields: dict[str, Any]) -> None:
        """A served request. Failing to record it is logged loudly, not fatal."""
        if self.sink is None:
            return
        try:
            self._append({"ts": now_iso(), "kind": "request", **fields}, durable=False)
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
        safe_direction: bool = False,
    ) -> None:
        """An admin or key action; raises (so the action is refused) when it cannot be
        recorded, unless it is `safe_direction` (revoking access): then the record goes to
        stderr and the backlog, and the action goes ahead."""
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
            self._append(record, durable=True)
        except Exception as exc:
            if safe_direction and self.backlog is not None:
                log.critical(
                    "audit log unavailable; %s done and held for the log", action, extra=record
                )
                self.backlog.hold(record)
                return
            log.error("audit unavailable; refusing admin action", extra={"action": action})
            raise ServiceError(
                ErrorKind.AUDIT_UNAVAILABLE,
                "the audit log cannot be written, so this action was refused; check the "
                "audit file's disk and permissions",
            ) from exc

    def verify(self) -> VerifyResult:
        """Check the whole chain as `embedgate audit verify` does, with the chain's own key
        (the console's "verify chain" button; the CLI also takes a checkpoint)."""
        if self.sink is None:
            return VerifyResult(False, 0, None, "there is no audit log")
        return verify_chain(self.sink.lines(), getattr(self.sink, "key", None))

    def admin_records(self) -> Iterator[dict[str, Any]]:
        """Every admin action in the log, oldest first (for reconciliation at start)."""
        for line in self.sink.lines() if self.sink is not None else ():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") == "admin":
                yield record

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
