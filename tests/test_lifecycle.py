"""Everything that opens, closes: an app started and stopped many times in one process leaves
no thread, child process or file handle behind, and SIGTERM stops a busy server quickly."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.storage.catalog import Catalog
from embedgate.storage.database import open_database
from support.processes import start_serve, stop, wait_served
from support.servers import client_for, fake_factory

pytestmark = pytest.mark.slow  # starts real embedgate processes


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_processes() -> list[int]:
    """Live (not zombie) children of this process, from /proc."""
    children = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                children += [int(pid) for pid in handle.read().split()]
        except FileNotFoundError:  # the thread ended between the listing and the read
            pass
    alive = []
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return sorted(alive)


def one_round(data_dir: Path, n: int) -> None:
    """Start the app, ingest one document (parse worker, catalog, vector store), stop."""
    app = create_app(Settings(data_dir=data_dir), fake_factory())
    with client_for(app) as client:
        assert client.post("/v1/collections", json={"name": f"c{n}"}).status_code == 201
        accepted = client.post(
            f"/v1/collections/c{n}/documents",
            files={"file": ("a.txt", f"round {n}: the parse worker and the store ran".encode())},
        ).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{accepted['job']['id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def settle(count: object, want: object, timeout: float = 10) -> None:
    """Closing is synchronous, but a thread may take a moment to leave after it was joined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and count() != want:  # type: ignore[operator]
        time.sleep(0.05)


def test_twenty_starts_and_stops_leak_no_thread_process_or_file(tmp_path: Path) -> None:
    # two warm-up rounds: multiprocessing's forkserver (one per process, by design) and the
    # libraries' import-time caches are created once and stay
    for n in range(2):
        one_round(tmp_path / "warm", n)
    threads, children, files = threading.active_count(), child_processes(), open_files()
    for n in range(20):
        one_round(tmp_path / f"run{n}", n)
    settle(threading.active_count, threads)
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    settle(child_processes, children)
    assert child_processes() == children
    assert open_files() <= files, sorted(os.listdir("/proc/self/fd"))


def test_sigterm_stops_a_server_mid_ingest_within_ten_seconds(tmp_path: Path) -> None:
    served = start_serve(
        tmp_path / "data", EMBEDGATE_KB_CHUNK_TOKENS="48", EMBEDGATE_KB_CHUNK_OVERLAP="4"
    )
    try:
        wait_served(served)
        http = httpx.Client(base_url=served.base, headers=served.admin, timeout=60)
        assert http.post("/v1/collections", json={"name": "big"}).status_code == 201
        text = "\n\n".join(f"Paragraph {i} is about topic {i % 37}." for i in range(6000))
        job = http.post(
            "/v1/collections/big/documents", files={"file": ("big.txt", text.encode())}
        ).json()["job"]
        deadline = time.monotonic() + 120
        while job["stage"] != "embedding":
            assert job["status"] != "succeeded", "ingest finished before the signal"
            assert time.monotonic() < deadline
            time.sleep(0.05)
            job = http.get(f"/v1/jobs/{job['id']}").json()
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        stop(served, signal.SIGKILL)
    assert took < 10, f"SIGTERM took {took:.1f} s"
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so a supervisor
    # sees "terminated by SIGTERM" as for any well-behaved daemon
    assert code == -signal.SIGTERM
    # the interrupted job is left for the next start's recovery, not marked failed
    database = open_database(f"sqlite:///{tmp_path / 'data' / 'embedgate.db'}")
    stored = Catalog(database).job(job["id"])
    assert stored is not None and stored["status"] == "running", stored


def test_a_start_and_stop_of_serve_leaves_nothing_in_the_temp_dir(tmp_path: Path) -> None:
    """Everything `embedgate serve` writes lives under its data dir: the temp dir (every
    library here honours TMPDIR, glog and tempfile included) is as empty after a start with
    the knowledge base in use and a SIGTERM as before."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    served = start_serve(tmp_path / "data", TMPDIR=str(temp))
    try:
        wait_served(served)
        created = httpx.post(
            served.base + "/v1/collections", json={"name": "handbook"}, headers=served.admin
        )
        assert created.status_code == 201  # Milvus Lite's server started
    finally:
        stop(served)
    assert served.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises it
    assert sorted(p.name for p in temp.iterdir()) == []
    assert any((tmp_path / "data" / "milvus-logs").iterdir())  # its logs went here instead
