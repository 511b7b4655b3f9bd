"""kill -9 in the middle of a burst of key creations and rotations: after a restart, every key
the audit log says exists exists, every key that exists is in the audit log, and every
rotated key has its expiry (it used to leave records of keys that never existed, and a
rotation whose old key never got its expiry and so worked for ever)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.servers import wait_ready
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EMBEDGATE_DATA_DIR": str(data_dir),
        "EMBEDGATE_LOG_LEVEL": "warning",
        "EMBEDGATE_SELF_TEST": "false",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_during_a_burst_of_key_changes_leaves_log_and_keys_agreeing(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve(tmp_path, port)
    try:
        wait_ready(lambda p: httpx.get(base + p, timeout=5), timeout=180)
        admin = {"Authorization": f"Bearer {(tmp_path / 'admin.key').read_text().strip()}"}
        stop = threading.Event()

        def burst(n: int) -> None:
            with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    try:
                        made = c.post(
                            "/v1/admin/keys", json={"name": f"b{n}-{i}", "role": "reader"}
                        )
                        if made.status_code == 201:
                            c.post(
                                f"/v1/admin/keys/{made.json()['id']}/rotate", json={"grace": "1h"}
                            )
                    except httpx.TransportError:
                        return  # the server is gone
                    i += 1

        workers = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(3.0)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    server = serve(tmp_path, port)  # the restart reconciles
    try:
        wait_ready(lambda p: httpx.get(base + p, timeout=5), timeout=180)
        keys = httpx.get(base + "/v1/admin/keys", headers=admin, timeout=30).json()["data"]
    finally:
        server.terminate()
        server.wait(timeout=60)

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    admin_records = [r for r in records if r.get("kind") == "admin"]
    claimed = {r["target"] for r in admin_records if r["action"] == "key.create"}
    claimed |= {r["after"]["new_key"]["id"] for r in admin_records if r["action"] == "key.rotate"}
    abandoned = {r["target"] for r in admin_records if r["action"] == "key.abandoned"}
    stored = {k["id"]: k for k in keys}
    assert len(stored) > 10, "the burst made too few keys to mean anything"
    assert claimed - abandoned == set(stored)  # the log's keys exist, and the reverse
    for record in admin_records:
        if record["action"] == "key.rotate" and record["after"]["new_key"]["id"] in stored:
            old = stored[record["target"]]
            assert old["expires_at"] is not None  # a rotated key always got its end
