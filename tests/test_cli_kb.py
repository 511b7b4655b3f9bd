"""`embedgate kb create|ingest|search`, in-process on a data dir and against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import fake_factory, running_server, wait_ready
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def kb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedgate", "kb", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "leave.md").write_text("# Leave\n\nParental leave is sixteen weeks at full pay.")
    (folder / "sub" / "zh.txt").write_text("差旅费用须在出差结束后30天内提交报销。")
    (folder / "bad.exe").write_bytes(b"MZ")
    return folder


def test_kb_in_process(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    created = kb("create", "handbook", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["model"] == "all-MiniLM-L6-v2"
    ingested = kb("ingest", "handbook", str(docs(tmp_path)), "--data-dir", data)
    assert ingested.returncode == 1  # the .exe is refused, the others are indexed
    flat = " ".join(ingested.stdout.split())
    assert "2 of 3 files indexed" in flat and "unsupported file type" in flat
    found = kb("search", "handbook", "差旅 报销", "--mode", "lexical", "--data-dir", data)
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert hits and hits[0]["filename"] == "zh.txt"
    dense = kb(
        "search", "handbook", "how long is parental leave", "--top-k", "1", "--data-dir", data
    )
    assert json.loads(dense.stdout.splitlines()[0])["filename"] == "leave.md"
    missing = kb("search", "nope", "x", "--data-dir", data)
    assert missing.returncode == 1 and "not found" in missing.stderr
    # an admin action taken in-process is in the audit trail as over HTTP, chained
    rebuilt = kb("reindex", "handbook", "--data-dir", data)
    assert rebuilt.returncode == 0, rebuilt.stderr
    audit = Path(data) / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    reindexed = [r for r in records if r.get("action") == "collection.reindex"]
    assert len(reindexed) == 1 and reindexed[0]["target"] == "handbook"
    assert reindexed[0]["key_id"] == "cli"
    verified = subprocess.run(
        [sys.executable, "-m", "embedgate", "audit", "verify", "--data-dir", data],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_kb_against_a_server(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "srv"), fake_factory())
    with running_server(app, free_port()) as server:
        env = {"EMBEDGATE_API_KEY": server.key}
        assert kb("create", "remote", "--server", server.base, env=env).returncode == 0
        ingested = kb(
            "ingest", "remote", str(docs(tmp_path) / "leave.md"), "--server", server.base, env=env
        )
        assert ingested.returncode == 0 and "1 of 1 files indexed" in ingested.stdout
        found = kb(
            "search", "remote", "parental", "--mode", "lexical", "--server", server.base, env=env
        )
        assert json.loads(found.stdout.splitlines()[0])["filename"] == "leave.md"
        denied = kb(
            "search", "remote", "x", "--server", server.base, env={"EMBEDGATE_API_KEY": "egk_bad"}
        )
        assert denied.returncode == 1 and "401" in denied.stderr
        rebuilt = kb("reindex", "remote", "--server", server.base, env=env)
        assert rebuilt.returncode == 0 and "done: " in rebuilt.stdout, rebuilt.stderr
        again = kb(
            "search", "remote", "parental", "--mode", "lexical", "--server", server.base, env=env
        )
        assert json.loads(again.stdout.splitlines()[0])["filename"] == "leave.md"
        wrong = kb("reindex", "remote", "--model", "other", "--server", server.base, env=env)
        assert wrong.returncode == 1 and "--model other" in wrong.stderr


def test_kb_uses_the_server_that_holds_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port), "--data-dir", str(data)],
        env={**os.environ, "EMBEDGATE_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda p: httpx.get(base + p, timeout=5), timeout=180)
        assert json.loads((data / "server.json").read_text())["url"] == base
        created = kb("create", "shared", "--data-dir", str(data))
        assert created.returncode == 0, created.stderr
        assert f"using the server at {base}" in created.stderr  # no Milvus lock fight
        key = (data / "admin.key").read_text().strip()
        listed = httpx.get(base + "/v1/collections", headers={"Authorization": f"Bearer {key}"})
        assert [c["name"] for c in listed.json()["data"]] == ["shared"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert not (data / "server.json").exists()
    alone = kb("search", "shared", "x", "--mode", "lexical", "--data-dir", str(data))
    assert alone.returncode == 0, alone.stderr
    assert f"in-process on the data dir {data.resolve()}" in alone.stderr
