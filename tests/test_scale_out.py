"""Two replicas on one PostgreSQL, as the README's scale-out recipe says: with the same pepper
a key made on one works on the other; with another pepper the second refuses to start with a
line that names the setting (it used to start, say ready, and answer 401 to every key)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from embedgate.security.secret_files import write_secret_file
from support.servers import wait_ready
from support.services import free_port, postgres_instance

pytestmark = pytest.mark.slow  # starts real embedgate processes


def replica(data_dir: Path, database: str, pepper: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {
        **os.environ,
        "EMBEDGATE_DATA_DIR": str(data_dir),
        "EMBEDGATE_DATABASE_URL": database,
        "EMBEDGATE_PEPPER_FILE": str(pepper),
        "EMBEDGATE_LOG_LEVEL": "warning",
        "EMBEDGATE_SELF_TEST": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def test_replicas_share_keys_with_one_pepper_and_refuse_another(tmp_path: Path) -> None:
    shared, other = tmp_path / "pepper", tmp_path / "other-pepper"
    write_secret_file(shared, os.urandom(32).hex().encode())
    write_secret_file(other, os.urandom(32).hex().encode())
    with postgres_instance() as pg:
        a, base_a = replica(tmp_path / "a", pg.url, shared)
        b = None
        try:
            wait_ready(lambda p: httpx.get(base_a + p, timeout=5), timeout=180)
            admin = {
                "Authorization": f"Bearer {(tmp_path / 'a' / 'admin.key').read_text().strip()}"
            }
            made = httpx.post(
                base_a + "/v1/admin/keys", json={"name": "app", "role": "writer"}, headers=admin
            )
            assert made.status_code == 201, made.text
            key = {"Authorization": f"Bearer {made.json()['key']}"}

            b, base_b = replica(tmp_path / "b", pg.url, shared)
            wait_ready(lambda p: httpx.get(base_b + p, timeout=5), timeout=180)
            assert not (tmp_path / "b" / "admin.key").exists()  # keys exist: no bootstrap
            reply = httpx.post(base_b + "/v1/embeddings", json={"input": "hi"}, headers=key)
            assert reply.status_code == 200, reply.text
            stop(b)

            c, _ = replica(tmp_path / "c", pg.url, other)
            code = c.wait(timeout=120)
            stderr = c.stderr.read() if c.stderr else ""
            assert code == 2
            last = stderr.strip().splitlines()[-1]
            assert "pepper does not match" in last and "EMBEDGATE_PEPPER_FILE" in last
            assert "Traceback" not in stderr
        finally:
            stop(a)
            if b is not None:
                stop(b)
