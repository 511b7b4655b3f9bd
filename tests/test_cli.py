"""The real commands: `embedgate embed` and `embedgate serve` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.servers import wait_ready
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedgate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,  # type: ignore[call-overload]
    )


def test_embed_prints_json() -> None:
    result = run("embed", "hello world")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["model"] == "all-MiniLM-L6-v2" and out["dimensions"] == 384
    assert abs(sum(x * x for x in out["embedding"]) - 1.0) < 1e-4


def test_embed_qwen3_with_dimensions_and_query(tiny_qwen3_dir: Path) -> None:
    result = run(
        "embed",
        "capital of France",
        "--dimensions",
        "32",
        "--query",
        "--model",
        str(tiny_qwen3_dir),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dimensions"] == 32
    bad = run("embed", "x", "--dimensions", "31", "--model", str(tiny_qwen3_dir))
    assert bad.returncode == 1 and "from 32 to 64" in bad.stderr


def proc_output_so_far(proc: subprocess.Popen[str]) -> str:
    """The command line of the server (secrets must never be on it)."""
    return Path(f"/proc/{proc.pid}/cmdline").read_text().replace("\0", " ")


def test_serve_runs_the_bundled_model(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EMBEDGATE_LOG_LEVEL": "info"}
    # a file, not a pipe: nobody reads a pipe while the test polls /ready, and a server
    # blocked on a full pipe stops answering (its access log grows with every poll)
    log_path = tmp_path / "stderr.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedgate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(lambda p: httpx.get(base + p, timeout=5), timeout=180)
        key = (tmp_path / "d" / "admin.key").read_text().strip()
        assert oct((tmp_path / "d" / "admin.key").stat().st_mode & 0o777) == "0o600"
        assert key not in proc_output_so_far(proc)
        response = httpx.post(
            base + "/v1/embeddings",
            json={"input": ["a", "b"], "model": "all-MiniLM-L6-v2"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert httpx.post(base + "/v1/embeddings", json={"input": "a"}).status_code == 401
        assert response.status_code == 200 and len(response.json()["data"]) == 2
        assert (tmp_path / "d").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    err = log_path.read_text()
    # uvicorn re-raises SIGTERM after a graceful shutdown
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("message") == "self-test passed" for line in lines)
    records = [json.loads(line) for line in lines]
    assert any(r.get("admin_key_file", "").endswith("admin.key") for r in records)
    assert key not in err


def test_serve_refuses_a_missing_model_directory(tmp_path: Path) -> None:
    result = run("serve", "--model", str(tmp_path / "missing"), "--port", str(free_port()))
    assert result.returncode == 2 and "neither a model directory nor a .gguf file" in result.stderr


def test_embed_with_a_missing_model_is_one_line_and_a_hint(tmp_path: Path) -> None:
    result = run("embed", "hello", "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "neither a model directory nor a .gguf file" in lines[0] and "--model" in lines[0]
