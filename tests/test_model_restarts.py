"""The model process always comes back: a real `embedgate serve`, real SIGKILLs of the model
process and of its replacements while they load, as the OOM killer would. Clients see only
200 or 503 (never 500), the server is ready again in bounded time, and an ingest job running
through all of it completes with every chunk indexed once. With
`model_restart_failures_before_exit` the server instead exits non-zero for its supervisor."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from embedgate.engine.loading import BUNDLED_MODEL_NAME
from support.processes import serving
from support.servers import wait_ready

pytestmark = pytest.mark.slow  # starts real embedgate processes


def model_processes(server_pid: int) -> set[int]:
    """The server's children that run the model."""
    found = set()
    for task in os.listdir(f"/proc/{server_pid}/task"):
        with open(f"/proc/{server_pid}/task/{task}/children") as handle:
            for pid in handle.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        if b"embedgate.engine.backends.torch.model_process" in cmd.read():
                            found.add(int(pid))
                except FileNotFoundError:
                    pass
    return found


def wait_for_new(server_pid: int, seen: set[int], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = model_processes(server_pid) - seen
        if fresh:
            return fresh.pop()
        time.sleep(0.01)
    raise TimeoutError("no replacement model process appeared")


def test_kills_while_loading_never_give_500_and_ingest_completes(tmp_path: Path) -> None:
    with serving(
        tmp_path / "data", EMBEDGATE_KB_CHUNK_TOKENS="48", EMBEDGATE_KB_CHUNK_OVERLAP="4"
    ) as served:
        server, base, headers = served.process, served.base, served.admin
        http = httpx.Client(base_url=base, headers=headers, timeout=120)
        assert http.post("/v1/collections", json={"name": "kb"}).status_code == 201
        paragraphs = [f"Paragraph {i} talks about topic {i % 31} at length." for i in range(1500)]
        text = "\n\n".join([*paragraphs, "The very last paragraph names the okapi once."])
        upload = http.post("/v1/collections/kb/documents", files={"file": ("big.txt", text)})
        job_id = upload.json()["job"]["id"]

        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=120) as mine:
                i = 0
                while not stop.is_set():
                    reply = mine.post("/v1/embeddings", json={"input": f"client {n} text {i}"})
                    statuses[reply.status_code] += 1
                    if reply.status_code == 503:
                        assert reply.json()["error"]["code"] in ("model_unavailable", "not_ready")
                        assert int(reply.headers["Retry-After"]) >= 1
                        time.sleep(0.05)
                    i += 1

        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(1.0)  # under load, with the ingest job embedding
            first = model_processes(server.pid)
            assert len(first) == 1
            killed_at = time.monotonic()
            os.kill(next(iter(first)), signal.SIGKILL)
            seen = set(first)
            for _ in range(2):  # the replacement dies while it loads, twice in a row
                fresh = wait_for_new(server.pid, seen)
                os.kill(fresh, signal.SIGKILL)
                seen.add(fresh)
            wait_ready(lambda p: httpx.get(base + p, timeout=5), timeout=90)
            took = time.monotonic() - killed_at
            time.sleep(1.0)  # and serving again
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=120)
        assert took < 90, f"ready again after {took:.0f} s"
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0 and server.poll() is None
        assert http.get("/health").status_code == 200

        deadline = time.monotonic() + 300
        while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] != "succeeded":
            assert job["status"] != "failed", job
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        document = http.get("/v1/collections/kb/documents").json()["data"][0]
        assert document["status"] == "ready" and document["chunks"] > 100
        collection = http.get("/v1/collections/kb").json()
        assert collection["chunks"] == document["chunks"]  # every chunk once
        hits = http.post(
            "/v1/collections/kb/search", json={"query": "okapi", "mode": "lexical", "top_k": 5}
        ).json()["data"]
        assert [h for h in hits if "okapi" in h["text"]] == hits[:1]  # one chunk, not two
        metrics = http.get("/metrics").text
        label = f'{{model="{BUNDLED_MODEL_NAME}"}}'
        assert f"embedgate_model_restarts_total{label} 1.0" in metrics
        assert f"embedgate_model_restart_failures_total{label} 2.0" in metrics
        ready = f'embedgate_model_ready{{model="{BUNDLED_MODEL_NAME}",task="embed"}} 1.0'
        assert ready in metrics


def test_the_server_exits_for_its_supervisor_when_told_to_give_up(
    tmp_path: Path, tiny_qwen3_dir: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen3_dir, model)
    with serving(
        tmp_path / "data", "--model", str(model), EMBEDGATE_MODEL_RESTART_FAILURES_BEFORE_EXIT="2"
    ) as served:
        model.rename(tmp_path / "moved")  # every reload fails from now on
        (pid,) = model_processes(served.process.pid)
        os.kill(pid, signal.SIGKILL)
        code = served.process.wait(timeout=60)
    stderr = served.stderr.read_text()
    assert code == 3
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("embedgate: exiting:") and "2 restarts in a row failed" in last
    assert "model_restart_failures_before_exit" in last
