"""The hash-chained audit log and `embedgate audit verify`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from embedgate.security.audit import AuditLog, verify_chain
from embedgate.security.audit_file import FileAuditSink


def write_log(path: Path, n: int = 5) -> list[str]:
    log = AuditLog(FileAuditSink(path))
    for i in range(n):
        log.request({"route": "/v1/embeddings", "status": 200, "n_tokens": i, "key_id": "k"})
    log.admin("key.create", actor="admin", target="k2", after={"role": "reader"})
    return path.read_text().splitlines()


def verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedgate", "audit", "verify", "--path", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_intact_chain(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl")
    assert verify_chain(lines).ok and verify_chain(lines).records == 6
    result = verify_cli(tmp_path / "a.jsonl")
    assert result.returncode == 0 and "6 records" in result.stdout


def test_edited_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    record = json.loads(lines[2])
    record["status"] = 500
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    assert verify_chain(lines).bad_line == 3
    result = verify_cli(path)
    assert result.returncode == 1 and "line 3" in result.stderr


def test_deleted_and_reordered_lines(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "a.jsonl")
    deleted = lines[:1] + lines[2:]
    assert verify_chain(deleted).bad_line == 2
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert verify_chain(swapped).bad_line == 2
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(deleted) + "\n")
    assert verify_cli(path).returncode == 1


def test_two_writers_keep_one_chain(tmp_path: Path) -> None:
    """Two processes' sinks on one file (a server and the CLI) interleave safely."""
    path = tmp_path / "shared.jsonl"
    first, second = AuditLog(FileAuditSink(path)), AuditLog(FileAuditSink(path))
    for i in range(10):
        (first if i % 3 else second).request({"n": i})
    assert verify_chain(path.read_text().splitlines()).records == 10


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
        "prev",
        "hash",
    }
    assert (tmp_path / "a.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_moved_aside_and_noted_in_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    with path.open("ab") as handle:  # a disk that filled up in the middle of an append
        handle.write(b'{"seq":7,"kind":"request","rou')
    log = AuditLog(FileAuditSink(path))  # what a restart does
    log.admin("key.revoke", actor="admin", target="k2")  # admin actions work again
    lines = path.read_text().splitlines()
    assert verify_chain(lines).ok and verify_cli(path).returncode == 0
    recovered = json.loads(lines[-2])
    assert recovered["action"] == "audit.recovered" and recovered["torn_bytes"] == 30
    side = tmp_path / recovered["side_file"]
    assert side.read_bytes() == b'{"seq":7,"kind":"request","rou'
    assert json.loads(lines[-1])["action"] == "key.revoke"


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    AuditLog(FileAuditSink(path)).request({"route": "/x", "status": 200})
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and verify_chain(lines).ok
    assert not list(tmp_path.glob("*.torn-*"))
