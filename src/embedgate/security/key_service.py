"""API key lifecycle (create, list, revoke, rotate) and verification on the hot path.

Verification costs no database round trip for a known key: records are cached for a short TTL
(`key_cache_ttl_s`); revoking or rotating through this process invalidates its cache at once,
other replicas within the TTL. Malformed keys and bad checksums are refused before any lookup.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from typing_extensions import TypedDict  # pydantic (FastAPI answers) needs it before 3.12

from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Principal, Role
from embedgate.security import keys
from embedgate.security.audit import AuditLog
from embedgate.storage.key_store import KeyRecord, KeyStore


@dataclass(frozen=True)
class IssuedKey:
    """A new key: shown to the caller once, never stored."""

    record: KeyRecord
    key: str


class KeyView(TypedDict):
    """A key as listings, API answers and audit records may show it: redacted."""

    id: str
    name: str
    role: str
    key: str  # prefix and last four characters only
    collections: list[str] | None
    models: list[str] | None
    cidrs: list[str]
    rpm: int | None
    tpm: int | None
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    rotated_from: str | None
    active: bool


def public_view(record: KeyRecord, now: datetime | None = None) -> KeyView:
    """What listings and audit records may show: never the digest, never the key."""
    now = now or datetime.now(UTC)

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return KeyView(
        id=record.id,
        name=record.name,
        role=record.role,
        key=keys.redact(record.id, record.last4),
        collections=list(record.collections) if record.collections is not None else None,
        models=list(record.models) if record.models is not None else None,
        cidrs=list(record.cidrs),
        rpm=record.rpm,
        tpm=record.tpm,
        created_at=iso(record.created_at),
        expires_at=iso(record.expires_at),
        revoked_at=iso(record.revoked_at),
        last_used_at=iso(record.last_used_at),
        rotated_from=record.rotated_from,
        active=record.active(now),
    )


def _bad(message: str, param: str) -> ServiceError:
    return ServiceError(ErrorKind.INVALID_REQUEST, message, param)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `45s` -> timedelta."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise _bad(f"duration {text!r} must look like 30d, 12h, 15m or 45s", "duration")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


class KeyService:
    def __init__(
        self, store: KeyStore, pepper: bytes, audit: AuditLog, cache_ttl: float = 10.0
    ) -> None:
        self.store = store
        self._pepper = pepper
        self.audit = audit
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._used: dict[str, datetime] = {}
        self._lock = threading.Lock()

    # --- lifecycle (admin) -------------------------------------------------------------------
    def create(
        self,
        name: str,
        role: str,
        *,
        actor: str,
        collections: list[str] | None = None,
        models: list[str] | None = None,
        expires_in: timedelta | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        cidrs: list[str] | None = None,
        rotated_from: str | None = None,
    ) -> IssuedKey:
        issued = self._new_key(
            name,
            role,
            collections=collections,
            models=models,
            expires_in=expires_in,
            rpm=rpm,
            tpm=tpm,
            cidrs=cidrs,
            rotated_from=rotated_from,
        )
        record = issued.record
        after = public_view(record, record.created_at)
        self.audit.admin("key.create", actor=actor, target=record.id, after=after)
        self.store.add(record)
        return issued

    def _new_key(
        self,
        name: str,
        role: str,
        *,
        collections: list[str] | None,
        models: list[str] | None,
        expires_in: timedelta | None,
        rpm: int | None,
        tpm: int | None,
        cidrs: list[str] | None,
        rotated_from: str | None,
    ) -> IssuedKey:
        """A validated record and its key, stored nowhere yet."""
        if not name or len(name) > 200:
            raise _bad("name must be 1 to 200 characters", "name")
        try:
            Role(role)
        except ValueError:
            raise _bad(f"role must be one of {[r.value for r in Role]}", "role") from None
        for value, param in ((rpm, "rpm"), (tpm, "tpm")):
            if value is not None and value < 1:
                raise _bad(f"{param} must be a positive integer", param)
        networks = []
        for cidr in cidrs or []:
            try:
                networks.append(str(ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                raise _bad(f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8)", "cidrs") from None
        if models is not None and not all(isinstance(m, str) and 0 < len(m) <= 200 for m in models):
            raise _bad("models must be model names (1 to 200 characters each)", "models")
        now = datetime.now(UTC)
        key_id, key = keys.generate_key()
        record = KeyRecord(
            id=key_id,
            name=name,
            role=role,
            digest=keys.digest(self._pepper, key),
            last4=key[-4:],
            created_at=now,
            collections=tuple(collections) if collections is not None else None,
            models=tuple(models) if models is not None else None,
            cidrs=tuple(networks),
            expires_at=now + expires_in if expires_in else None,
            rpm=rpm,
            tpm=tpm,
            rotated_from=rotated_from,
        )
        return IssuedKey(record, key)

    def list(self) -> list[KeyView]:
        now = datetime.now(UTC)
        return [public_view(r, now) for r in self.store.all()]

    def get(self, key_id: str) -> KeyRecord:
        record = self.store.get(key_id)
        if record is None:
            raise ServiceError(ErrorKind.NOT_FOUND, f"no key with id {key_id!r}", "id")
        return record

    def revoke(self, key_id: str, actor: str) -> KeyView:
        record = self.get(key_id)
        now = datetime.now(UTC)
        after = public_view(record.__class__(**{**record.__dict__, "revoked_at": now}), now)
        self.audit.admin(  # revoking is the safe direction: done even if the log fails
            "key.revoke",
            actor=actor,
            target=key_id,
            before=public_view(record, now),
            after=after,
            safe_direction=True,
        )
        updated = self.store.update(key_id, revoked_at=now)
        self.invalidate(key_id)
        assert updated is not None
        return public_view(updated, now)

    def rotate(self, key_id: str, actor: str, grace: timedelta = timedelta(0)) -> IssuedKey:
        """A new key with the same name, role and limits; the old one dies after `grace`."""
        old = self.get(key_id)
        now = datetime.now(UTC)
        if not old.active(now):
            raise _bad(f"key {key_id} is revoked or expired; create a new key instead", "id")
        remaining = old.expires_at - now if old.expires_at else None
        issued = self._new_key(
            old.name,
            old.role,
            collections=list(old.collections) if old.collections is not None else None,
            models=list(old.models) if old.models is not None else None,
            expires_in=remaining,
            rpm=old.rpm,
            tpm=old.tpm,
            cidrs=list(old.cidrs),
            rotated_from=old.id,
        )
        ends = now + grace
        if old.expires_at is not None and old.expires_at < ends:
            ends = old.expires_at
        # one record, then one transaction: a crash between them leaves a record of a
        # rotation that did not happen, which `reconcile` marks abandoned at the next start
        self.audit.admin(
            "key.rotate",
            actor=actor,
            target=key_id,
            before=public_view(old, now),
            after={"expires_at": str(ends), "new_key": public_view(issued.record, now)},
        )
        self.store.replace_key(issued.record, old_id=key_id, old_expires_at=ends)
        self.invalidate(key_id)
        return issued

    def reconcile(self) -> builtins.list[str]:
        """After a crash, make the key store and the audit log agree (run at start).

        Admin records are written before their database change, so a crash in between
        leaves a record of a change that did not happen: a created or rotated key that does
        not exist is recorded as abandoned (`key.abandoned`), and a revocation that did not
        reach the database is completed (the safe direction). Returns what was done."""
        done: builtins.list[str] = []
        claimed, revoked, abandoned = set(), set(), set()
        for record in self.audit.admin_records():
            action, target = record.get("action"), record.get("target")
            if action == "key.create":
                claimed.add(str(target))
            elif action == "key.rotate":
                claimed.add(str((record.get("after") or {}).get("new_key", {}).get("id")))
            elif action == "key.revoke":
                revoked.add(str(target))
            elif action == "key.abandoned":
                abandoned.add(str(target))
        stored = {record.id: record for record in self.store.all()}
        for key_id in sorted(claimed - abandoned - set(stored) - {"None"}):
            self.audit.admin(
                "key.abandoned",
                actor="system",
                target=key_id,
                after={"reason": "recorded, but the server stopped before the change was made"},
            )
            done.append(f"abandoned {key_id}")
        now = datetime.now(UTC)
        for key_id in sorted(revoked & set(stored)):
            if stored[key_id].revoked_at is None:
                self.store.update(key_id, revoked_at=now)
                self.invalidate(key_id)
                done.append(f"revoked {key_id}")
        return done

    def ensure_admin_key(self) -> IssuedKey | None:
        """First start with an empty store: create the bootstrap admin key."""
        if self.store.count() > 0:
            return None
        return self.create("bootstrap-admin", Role.ADMIN.value, actor="system")

    # --- verification (hot path) -------------------------------------------------------------
    def invalidate(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    async def _record(self, key_id: str, stale_ok_s: float = 0.0) -> KeyRecord | None:
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        try:
            record = await asyncio.to_thread(self.store.get, key_id)
        except ServiceError as exc:
            # a database outage may be bridged by a record verified recently enough
            outage = exc.kind is ErrorKind.STORAGE_UNAVAILABLE
            if outage and cached is not None and now - cached[1] < stale_ok_s:
                return cached[0]
            raise
        with self._lock:
            self._cache[key_id] = (record, now)
        return record

    async def authenticate(
        self, candidate: str, client_ip: str | None, *, stale_ok_s: float = 0.0
    ) -> Principal | None:
        """`stale_ok_s`: while the database is unreachable, a record verified this recently
        still counts (only `/metrics` asks for it: the outage must show in the metrics)."""
        parsed = keys.parse_key(candidate)
        if parsed is None:
            return None  # malformed or bad checksum: no lookup at all
        record = await self._record(parsed.key_id, stale_ok_s)
        if record is None or not keys.verify(self._pepper, candidate, record.digest):
            return None
        now = datetime.now(UTC)
        if not record.active(now):
            return None
        if record.cidrs and not _ip_in(client_ip, record.cidrs):
            return None
        self._used[record.id] = now
        return Principal(
            subject=record.id,
            role=Role(record.role),
            collections=record.collections,
            models=record.models,
            rpm=record.rpm,
            tpm=record.tpm,
        )

    def flush_last_used(self) -> None:
        """Write buffered last-used times (called periodically, off the hot path)."""
        used, self._used = self._used, {}
        self.store.touch(used)


def _ip_in(ip: str | None, cidrs: tuple[str, ...]) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(c) for c in cidrs)
