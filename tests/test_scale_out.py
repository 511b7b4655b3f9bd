"""Two replicas on one PostgreSQL, as the README's scale-out recipe says: with the same pepper
a key made on one works on the other; with another pepper the second refuses to start with a
line that names the setting (it used to start, say ready, and answer 401 to every key)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from embedgate.security.secret_files import write_secret_file
from support.processes import Served, start_serve, stop, wait_served
from support.services import postgres_instance

pytestmark = pytest.mark.slow  # starts real embedgate processes


def replica(data_dir: Path, database: str, pepper: Path) -> Served:
    return start_serve(
        data_dir,
        EMBEDGATE_DATABASE_URL=database,
        EMBEDGATE_PEPPER_FILE=str(pepper),
        EMBEDGATE_SELF_TEST="false",
    )


def test_replicas_share_keys_with_one_pepper_and_refuse_another(tmp_path: Path) -> None:
    shared, other = tmp_path / "pepper", tmp_path / "other-pepper"
    write_secret_file(shared, os.urandom(32).hex().encode())
    write_secret_file(other, os.urandom(32).hex().encode())
    with postgres_instance() as pg:
        a = replica(tmp_path / "a", pg.url, shared)
        b = None
        try:
            wait_served(a)
            made = httpx.post(
                a.base + "/v1/admin/keys", json={"name": "app", "role": "writer"}, headers=a.admin
            )
            assert made.status_code == 201, made.text
            key = {"Authorization": f"Bearer {made.json()['key']}"}

            b = replica(tmp_path / "b", pg.url, shared)
            wait_served(b)
            assert not (tmp_path / "b" / "admin.key").exists()  # keys exist: no bootstrap
            reply = httpx.post(b.base + "/v1/embeddings", json={"input": "hi"}, headers=key)
            assert reply.status_code == 200, reply.text
            stop(b)

            c = replica(tmp_path / "c", pg.url, other)
            code = c.process.wait(timeout=120)
            stderr = c.stderr.read_text()
            assert code == 2
            last = stderr.strip().splitlines()[-1]
            assert "pepper does not match" in last and "EMBEDGATE_PEPPER_FILE" in last
            assert "Traceback" not in stderr
        finally:
            stop(a)
            if b is not None:
                stop(b)
