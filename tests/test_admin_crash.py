"""kill -9 in the middle of a burst of key creations and rotations: after a restart, every key
the audit log says exists exists, every key that exists is in the audit log, and every
rotated key has its expiry (it used to leave records of keys that never existed, and a
rotation whose old key never got its expiry and so worked for ever)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.processes import serving, start_serve, stop, wait_served
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def test_kill_9_during_a_burst_of_key_changes_leaves_log_and_keys_agreeing(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = tmp_path / "data"
    served = start_serve(data, port=port, EMBEDGATE_SELF_TEST="false")
    base = served.base
    try:
        wait_served(served)
        admin = served.admin
        halt = threading.Event()

        def burst(n: int) -> None:
            with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
                i = 0
                while not halt.is_set():
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
        stop(served, signal.SIGKILL)
        halt.set()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        stop(served, signal.SIGKILL)

    with serving(data, port=port, EMBEDGATE_SELF_TEST="false"):  # the restart reconciles
        keys = httpx.get(base + "/v1/admin/keys", headers=admin, timeout=30).json()["data"]

    records = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
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
