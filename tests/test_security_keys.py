"""API keys: format, hashing, lifecycle, verification and the audit-or-refuse rule."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Role
from embedgate.security import keys
from embedgate.security.audit import AuditLog, MemoryAuditSink
from embedgate.security.key_service import KeyService, parse_duration
from embedgate.security.secret_files import InsecureSecretFile, load_pepper, read_secret_file
from embedgate.storage.key_store import MemoryKeyStore

PEPPER = b"test-pepper"


def service() -> tuple[KeyService, MemoryKeyStore, MemoryAuditSink]:
    store, sink = MemoryKeyStore(), MemoryAuditSink()
    return KeyService(store, PEPPER, AuditLog(sink), cache_ttl=60), store, sink


def auth(svc: KeyService, key: str, ip: str | None = "127.0.0.1") -> object:
    return asyncio.run(svc.authenticate(key, ip))


def test_format_has_prefix_entropy_and_checksum() -> None:
    key_id, key = keys.generate_key()
    assert key.startswith(f"egk_{key_id}_") and len(key) == 4 + 12 + 1 + 32 + 6
    parsed = keys.parse_key(key)
    assert parsed is not None and parsed.key_id == key_id
    assert keys.parse_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    # 32 base62 characters carry ~190 random bits
    assert 32 * 5.95 > 128


def test_stored_form_is_a_peppered_hmac() -> None:
    svc, store, _ = service()
    issued = svc.create("ci", "writer", actor="test")
    record = store.get(issued.record.id)
    assert record is not None and issued.key not in str(record)
    assert record.digest == keys.digest(PEPPER, issued.key) != keys.digest(b"other", issued.key)


def test_verify_and_principal() -> None:
    svc, _, _ = service()
    issued = svc.create("ci", "writer", actor="t", collections=["a"], rpm=5, tpm=100)
    principal = auth(svc, issued.key)
    assert principal is not None
    assert (principal.role, principal.collections, principal.rpm) == (Role.WRITER, ("a",), 5)  # type: ignore[attr-defined]


def test_bad_checksum_is_refused_without_a_lookup() -> None:
    svc, store, _ = service()
    issued = svc.create("ci", "reader", actor="t")
    before = store.lookups
    forged = issued.key[:-6] + "000000"
    assert auth(svc, forged) is None
    assert auth(svc, "egk_' OR 1=1 --") is None
    assert auth(svc, issued.key + "\x00") is None
    assert store.lookups == before


def test_cached_verification_needs_no_database() -> None:
    svc, store, _ = service()
    issued = svc.create("ci", "reader", actor="t")
    auth(svc, issued.key)
    before = store.lookups
    for _ in range(10):
        assert auth(svc, issued.key) is not None
    assert store.lookups == before


def test_revocation_is_immediate_despite_the_cache() -> None:
    svc, _, _ = service()
    issued = svc.create("ci", "reader", actor="t")
    assert auth(svc, issued.key) is not None
    svc.revoke(issued.record.id, actor="t")
    assert auth(svc, issued.key) is None


def test_expired_keys_fail() -> None:
    svc, store, _ = service()
    issued = svc.create("ci", "reader", actor="t", expires_in=timedelta(seconds=60))
    assert auth(svc, issued.key) is not None
    from datetime import UTC, datetime

    store.update(issued.record.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    svc.invalidate(issued.record.id)
    assert auth(svc, issued.key) is None


def test_rotation_with_and_without_grace() -> None:
    svc, _, _ = service()
    old = svc.create("ci", "writer", actor="t", rpm=7)
    new = svc.rotate(old.record.id, "t", grace=timedelta(hours=1))
    assert new.record.rpm == 7 and new.record.rotated_from == old.record.id
    assert auth(svc, old.key) is not None and auth(svc, new.key) is not None
    newer = svc.rotate(new.record.id, "t", grace=timedelta(0))
    assert auth(svc, new.key) is None and auth(svc, newer.key) is not None


def test_cidr_allow_list() -> None:
    svc, _, _ = service()
    issued = svc.create("ci", "reader", actor="t", cidrs=["10.0.0.0/8"])
    assert auth(svc, issued.key, "10.1.2.3") is not None
    assert auth(svc, issued.key, "192.168.1.1") is None
    assert auth(svc, issued.key, None) is None


def test_invalid_inputs_are_clear_errors() -> None:
    svc, _, _ = service()
    for kwargs, param in (
        ({"role": "root"}, "role"),
        ({"cidrs": ["nope"]}, "cidrs"),
        ({"rpm": 0}, "rpm"),
        ({"name": ""}, "name"),
    ):
        args = {"name": "n", "role": "reader", **kwargs}
        with pytest.raises(ServiceError) as info:
            svc.create(args.pop("name"), args.pop("role"), actor="t", **args)  # type: ignore[arg-type]
        assert info.value.param == param
    assert parse_duration("30d") == timedelta(days=30)
    with pytest.raises(ServiceError):
        parse_duration("soon")


def test_listing_never_shows_digests_or_keys() -> None:
    svc, _, _ = service()
    issued = svc.create("ci", "reader", actor="t")
    listing = str(svc.list())
    assert issued.key not in listing and issued.record.digest not in listing
    assert keys.redact(issued.record.id, issued.key[-4:]) in listing


def test_admin_actions_fail_closed_when_audit_is_down() -> None:
    svc, store, sink = service()
    sink.broken = True
    with pytest.raises(ServiceError) as info:
        svc.create("ci", "admin", actor="t")
    assert info.value.kind is ErrorKind.AUDIT_UNAVAILABLE
    assert store.count() == 0
    sink.broken = False
    issued = svc.create("ci", "admin", actor="t")
    sink.broken = True
    with pytest.raises(ServiceError):
        svc.revoke(issued.record.id, actor="t")
    assert auth(svc, issued.key) is not None


def test_bootstrap_admin_only_when_empty() -> None:
    svc, _, _ = service()
    first = svc.ensure_admin_key()
    assert first is not None and first.record.role == "admin"
    assert svc.ensure_admin_key() is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_random_strings_never_authenticate(candidate: str) -> None:
    svc, _, _ = SERVICE
    assert auth(svc, candidate) is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 54), st.characters(codec="ascii"))
def test_mutated_keys_never_authenticate(position: int, char: str) -> None:
    svc, _, _ = SERVICE
    mutated = VALID[:position] + char + VALID[position + 1 :]
    if mutated != VALID:
        assert auth(svc, mutated) is None


SERVICE = service()
VALID = SERVICE[0].create("prop", "admin", actor="t").key


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(InsecureSecretFile, match=f"chmod 600 {path}"):
        read_secret_file(path)
    os.chmod(path, 0o600)
    assert read_secret_file(path) == b"s3cret"


def test_pepper_is_generated_private(tmp_path: Path) -> None:
    pepper = load_pepper(None, None, tmp_path)
    assert len(pepper) == 64 and (tmp_path / "pepper").stat().st_mode & 0o777 == 0o600
    assert load_pepper(None, None, tmp_path) == pepper


def test_reconcile_settles_what_a_crash_left_half_done() -> None:
    svc, store, sink = service()
    kept = svc.create("kept", "reader", actor="t")
    lost = svc.create("lost", "reader", actor="t")
    store._records.pop(lost.record.id)  # the crash came between the record and the insert
    svc.audit.admin("key.revoke", actor="t", target=kept.record.id)  # and before this update
    assert store.get(kept.record.id).revoked_at is None  # type: ignore[union-attr]
    done = svc.reconcile()
    assert done == [f"abandoned {lost.record.id}", f"revoked {kept.record.id}"]
    assert store.get(kept.record.id).revoked_at is not None  # type: ignore[union-attr]
    assert '"action":"key.abandoned"' in sink.records[-1]
    assert svc.reconcile() == []  # settled once, for good
