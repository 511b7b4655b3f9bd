"""The hash-chained audit log and `embedgate audit verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from embedgate.security.audit import AuditLog, canonical, chain_hash, chain_key, verify_chain
from embedgate.security.audit_file import FileAuditSink

PEPPER = "a-test-pepper-of-reasonable-length-0123456789"
KEY = chain_key(PEPPER.encode())


def write_log(path: Path, n: int = 5) -> list[str]:
    log = AuditLog(FileAuditSink(path, key=KEY))
    for i in range(n):
        log.request({"route": "/v1/embeddings", "status": 200, "n_tokens": i, "key_id": "k"})
    log.admin("key.create", actor="admin", target="k2", after={"role": "reader"})
    return path.read_text().splitlines()


def verify_cli(path: Path, *args: str, pepper: str = PEPPER) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedgate", "audit", "verify", "--path", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EMBEDGATE_PEPPER": pepper},
    )


def test_intact_chain(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl")
    assert verify_chain(lines, KEY).ok and verify_chain(lines, KEY).records == 6
    result = verify_cli(tmp_path / "a.jsonl")
    assert result.returncode == 0 and "6 records" in result.stdout


def test_edited_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    record = json.loads(lines[2])
    record["status"] = 500
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    assert verify_chain(lines, KEY).bad_line == 3
    result = verify_cli(path)
    assert result.returncode == 1 and "line 3" in result.stderr


def test_deleted_and_reordered_lines(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl")
    deleted = lines[:1] + lines[2:]
    assert verify_chain(deleted, KEY).bad_line == 2
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert verify_chain(swapped, KEY).bad_line == 2
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(deleted) + "\n")
    assert verify_cli(path).returncode == 1


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    """Two processes' sinks on one file (a server and the CLI) interleave safely."""
    path = tmp_path / "shared.jsonl"
    first, second = AuditLog(FileAuditSink(path, key=KEY)), AuditLog(FileAuditSink(path, key=KEY))
    for i in range(10):
        (first if i % 3 else second).request({"n": i})
    assert verify_chain(path.read_text().splitlines(), KEY).records == 10


def test_records_carry_no_text_fields(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl", 1)
    assert set(json.loads(lines[0])) == {
        "seq",
        "ts",
        "kind",
        "route",
        "status",
        "n_tokens",
        "key_id",
        "chain",
        "prev",
        "hash",
    }
    assert (tmp_path / "a.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_moved_aside_and_noted_in_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    with path.open("ab") as handle:  # a disk that filled up in the middle of an append
        handle.write(b'{"seq":7,"kind":"request","rou')
    log = AuditLog(FileAuditSink(path, key=KEY))  # what a restart does
    log.admin("key.revoke", actor="admin", target="k2")  # admin actions work again
    lines = path.read_text().splitlines()
    assert verify_chain(lines, KEY).ok and verify_cli(path).returncode == 0
    recovered = json.loads(lines[-2])
    assert recovered["action"] == "audit.recovered" and recovered["torn_bytes"] == 30
    side = tmp_path / recovered["side_file"]
    assert side.read_bytes() == b'{"seq":7,"kind":"request","rou'
    assert json.loads(lines[-1])["action"] == "key.revoke"


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    AuditLog(FileAuditSink(path, key=KEY)).request({"route": "/x", "status": 200})
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and verify_chain(lines, KEY).ok
    assert not list(tmp_path.glob("*.torn-*"))


def test_a_record_deleted_and_the_chain_recomputed_without_the_key_is_caught(
    tmp_path: Path,
) -> None:
    """The old, unkeyed chain let anyone who could write the file delete a record and
    recompute every link after it; the keyed chain cannot be recomputed without the pepper."""
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    forged, prev = [], "0" * 64
    for seq, line in enumerate([lines[0], *lines[2:]], start=1):
        record = {k: v for k, v in json.loads(line).items() if k not in ("hash",)}
        record.update(seq=seq, prev=prev)
        record["hash"] = chain_hash(prev, record, b"an attacker's guess at the key")
        forged.append(canonical(record).decode())
        prev = record["hash"]
    path.write_text("\n".join(forged) + "\n")
    result = verify_cli(path)
    assert result.returncode == 1 and "line 1" in result.stderr
    # dropping the keyed marker does not help either: unkeyed lines are refused
    unkeyed = [json.loads(line) for line in lines]
    assert not verify_chain([json.dumps({**r, "chain": None}) for r in unkeyed], KEY).ok
    assert verify_cli(path, pepper="another-pepper-entirely-0123456789abcdef").returncode == 1


def test_a_checkpoint_catches_a_cut_off_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path)
    mark = subprocess.run(
        [sys.executable, "-m", "embedgate", "audit", "checkpoint", "--path", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert mark.startswith("6:") and len(mark) == 2 + 64
    assert verify_cli(path, "--checkpoint", mark).returncode == 0
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")  # the last two records removed
    assert verify_cli(path).returncode == 0  # a cut chain is still a valid chain...
    cut = verify_cli(path, "--checkpoint", mark)
    assert cut.returncode == 1 and "checkpoint 6 is missing" in cut.stderr  # ...but not this


def test_an_unkeyed_log_from_before_is_closed_and_a_keyed_chain_starts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = AuditLog(FileAuditSink(path))  # what earlier versions wrote
    old.request({"route": "/v1/embeddings", "status": 200})
    AuditLog(FileAuditSink(path, key=KEY)).request({"route": "/v1/models", "status": 200})
    (legacy,) = tmp_path.glob("audit.jsonl.legacy-*")
    assert verify_cli(legacy, "--legacy").returncode == 0
    assert verify_cli(legacy).returncode == 1  # unkeyed lines need --legacy
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["action"] == "audit.keyed"
    assert json.loads(lines[0])["legacy_file"] == legacy.name
    assert verify_cli(path).returncode == 0
