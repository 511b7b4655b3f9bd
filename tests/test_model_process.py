"""The model process: results reach their callers, failures stay contained, a dead child is
replaced, and the child sees none of the server's settings and outlives no parent."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.config import Settings
from embedgate.engine import EmbedRequest, EngineConfig, load_engine
from embedgate.engine.backend import ModelUnavailable
from embedgate.engine.backends.torch.backend import TorchBackend
from embedgate.engine.backends.torch.model_process import (
    ModelProcess,
    ModelProcessError,
    RestartPolicy,
)
from embedgate.engine.backends.torch.process_backend import ProcessBackend
from embedgate.engine.batching import PendingRequest, WorkItem
from embedgate.engine.scheduler import BatchScheduler
from embedgate.errors import ServiceError
from support.engines import start_engine
from support.process_models import (
    ENV,
    HANG,
    KILL,
    RAISE,
    load_and_exit,
    load_broken,
    load_fake,
    load_unless,
)
from support.servers import wait_until

TESTS = Path(__file__).parent


def batch(first: int, rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([[first, 5, 6]] * rows, dtype=np.int64)
    return ids, np.ones_like(ids)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


@pytest.fixture
def process() -> Iterator[ModelProcess]:
    proc = ModelProcess(load_fake, threads=None, workers=2)
    yield proc
    proc.close()


def test_results_reach_the_thread_that_asked(process: ModelProcess) -> None:
    results: dict[int, np.ndarray] = {}

    def ask(first: int) -> None:
        results[first] = process.run(*batch(first, rows=first % 5 + 1))

    threads = [threading.Thread(target=ask, args=(first,)) for first in range(10, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for first, rows in results.items():
        assert rows.shape == (first % 5 + 1, 2) and (rows == first + 11).all()


def test_a_failing_pass_fails_alone(process: ModelProcess) -> None:
    pid = process.pid
    with pytest.raises(ModelProcessError, match="ValueError: this batch is bad"):
        process.run(*batch(RAISE))
    assert process.run(*batch(10))[0, 0] == 21
    assert process.pid == pid and process.restarts == 0


def test_a_dead_child_fails_the_pass_in_flight_and_is_replaced(process: ModelProcess) -> None:
    pid = process.pid
    assert pid is not None
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            process.run(*batch(HANG))
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=hang)
    waiter.start()
    time.sleep(0.5)  # the child is inside the hanging pass
    os.kill(pid, signal.SIGKILL)
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ModelProcessError)
    assert "exit code -9" in str(errors[0])
    # the next pass waits for the new child instead of failing
    assert process.run(*batch(10))[0, 0] == 21
    assert process.restarts == 1 and process.pid not in (None, pid)
    assert process.unavailable is None
    assert wait_until(lambda: gone(pid))


def test_an_input_that_kills_the_child_fails_alone(process: ModelProcess) -> None:
    def run(sequences: object) -> np.ndarray:
        ids = np.array(sequences, dtype=np.int64)
        return process.run(ids, np.ones_like(ids))

    scheduler = BatchScheduler(run, max_batch_tokens=1000, max_queued_tokens=10_000)
    scheduler.start()
    try:
        requests = [PendingRequest(1, 2) for _ in range(6)]
        firsts = [10, 11, KILL, 12, 13, 14]
        scheduler.submit(
            [WorkItem([first, 5, 6], req, 0) for first, req in zip(firsts, requests, strict=True)]
        )
        for first, request in zip(firsts, requests, strict=True):
            if first == KILL:
                with pytest.raises(ServiceError, match="makes the model process exit"):
                    request.completion.result(timeout=60)
            else:
                assert request.completion.result(timeout=60)[0, 0] == first + 11
    finally:
        scheduler.stop()
    assert process.restarts == 2  # in the batch, then alone; no retry loop


QUICK = RestartPolicy(first_backoff_s=0.05, max_backoff_s=0.2, max_wait_s=0.5)


def test_a_replacement_that_cannot_load_is_retried_until_it_can(tmp_path: Path) -> None:
    marker = tmp_path / "gone"
    proc = ModelProcess(functools.partial(load_unless, str(marker)), threads=None, policy=QUICK)
    try:
        pid = proc.pid
        assert pid is not None and proc.run(*batch(10))[0, 0] == 21
        marker.touch()  # every start fails from now on: the weights are "gone"
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: proc.restart_failures >= 2)
        with pytest.raises(ModelUnavailable, match="weights are gone") as waited:
            proc.run(*batch(10))  # waits max_wait_s for a child, then says why
        assert waited.value.retry_after_s >= 0
        assert "failed" in (proc.unavailable or "") and proc.gave_up is None
        marker.unlink()  # the next retry loads
        assert wait_until(lambda: proc.pid is not None)
        assert proc.run(*batch(10))[0, 0] == 21 and proc.restarts == 1
        assert proc.unavailable is None
    finally:
        proc.close()


def test_restarts_give_up_only_when_told_to(tmp_path: Path) -> None:
    marker = tmp_path / "gone"
    policy = RestartPolicy(first_backoff_s=0.05, max_wait_s=0.5, max_failures=2)
    proc = ModelProcess(functools.partial(load_unless, str(marker)), threads=None, policy=policy)
    try:
        pid = proc.pid
        assert pid is not None
        marker.touch()
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: proc.gave_up is not None)
        assert proc.restart_failures == 2 and "2 restarts in a row failed" in (proc.gave_up or "")
        with pytest.raises(ModelUnavailable, match="giving up"):
            proc.run(*batch(10))
    finally:
        proc.close()


def test_load_failures_say_why() -> None:
    with pytest.raises(ModelProcessError, match="FileNotFoundError: no weights in /nowhere"):
        ModelProcess(load_broken, threads=None)
    with pytest.raises(ModelProcessError, match="exit code 3"):
        ModelProcess(load_and_exit, threads=None)


def test_the_child_does_not_see_the_servers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDGATE_JWT_SECRET", "do-not-pass-this-on")
    proc = ModelProcess(load_fake, threads=None)
    try:
        assert proc.run(*batch(ENV))[0, 0] == 0
    finally:
        proc.close()


def test_close_ends_the_child_and_refuses_work() -> None:
    proc = ModelProcess(load_fake, threads=None)
    pid = proc.pid
    assert pid is not None
    proc.close()
    assert wait_until(lambda: gone(pid))
    with pytest.raises(ModelProcessError, match="shut down"):
        proc.run(*batch(10))


@pytest.mark.slow
def test_no_orphan_when_the_server_is_killed() -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from embedgate.engine.backends.torch.model_process import ModelProcess
        from support.process_models import load_fake
        proc = ModelProcess(load_fake, threads=None)
        print(proc.pid, flush=True)
        time.sleep(120)
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        assert not gone(child)
        server.kill()
        server.wait(timeout=10)
        assert wait_until(lambda: gone(child)), "the model process outlived the server"
    finally:
        server.kill()


def test_engines_pick_the_backend_the_settings_ask_for(tiny_qwen3_dir: Path) -> None:
    # one forward thread: both texts share one pass in every engine. With two, they may run
    # as one padded pass or as two passes, whose vectors differ by float rounding (up to
    # ~4e-5 on this tiny random model), and the comparison would depend on timing.
    config = EngineConfig(model=str(tiny_qwen3_dir), forward_threads=1)
    texts = ["a query about cats", "a longer document about dogs and their owners"]
    served = load_engine(config)
    one_shot = load_engine(config, one_shot=True)
    threaded = load_engine(dataclasses.replace(config, model_process=False))
    engines = [served, one_shot, threaded]
    try:
        assert isinstance(served.backend, ProcessBackend)
        assert isinstance(one_shot.backend, TorchBackend)
        assert isinstance(threaded.backend, TorchBackend)
        for engine in engines:
            engine.start()
        vectors = [e.embed_sync(EmbedRequest(texts)).vectors for e in engines]
        assert np.abs(vectors[0] - vectors[1]).max() <= 1e-5
        assert np.abs(vectors[0] - vectors[2]).max() <= 1e-5
    finally:
        for engine in engines:
            engine.stop()


def test_an_engine_survives_its_model_process_dying(tiny_qwen3_dir: Path) -> None:
    engine = start_engine(tiny_qwen3_dir)
    try:
        backend = engine.backend
        assert isinstance(backend, ProcessBackend)
        before = engine.embed_sync(EmbedRequest(["still here"])).vectors
        pid = backend.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: backend.process.restarts == 1)
        after = engine.embed_sync(EmbedRequest(["still here"])).vectors
        assert np.array_equal(before, after) and backend.process.pid != pid
    finally:
        engine.stop()


def test_the_server_reports_a_restart_and_keeps_serving(tiny_qwen3_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from embedgate.app import create_app
    from support.servers import wait_ready

    app = create_app(Settings(model=str(tiny_qwen3_dir), auth=False, audit=False))
    with TestClient(app) as client:
        wait_ready(client.get)
        label = '{model="Qwen3-Embedding-tiny"}'
        assert f"embedgate_model_restarts_total{label} 0.0" in client.get("/metrics").text
        backend = app.state.embedgate.engine.backend
        assert isinstance(backend, ProcessBackend) and backend.process.pid is not None
        os.kill(backend.process.pid, signal.SIGKILL)
        # while the new model process loads, a load balancer is told to look elsewhere
        assert wait_until(lambda: client.get("/ready").status_code == 503)
        assert "exit code -9" in client.get("/ready").json()["reason"]
        assert "embedgate_ready 0.0" in client.get("/metrics").text
        refused = client.post("/v1/embeddings", json={"input": "during the restart"})
        if refused.status_code != 200:  # the replacement may already be up and self-tested
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "model_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
        assert client.get("/health").status_code == 200  # liveness: the server is fine
        # ready again only after the replacement passed the self-test
        assert wait_until(lambda: client.get("/ready").status_code == 200)
        assert backend.health().restarts == 1
        assert app.state.embedgate.model.self_tested_restarts == 1
        reply = client.post("/v1/embeddings", json={"input": "after the crash"})
        assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) > 0
        metrics = client.get("/metrics").text
        assert f"embedgate_model_restarts_total{label} 1.0" in metrics
        assert f"embedgate_model_restart_failures_total{label} 0.0" in metrics
        assert 'embedgate_model_ready{model="Qwen3-Embedding-tiny",task="embed"} 1.0' in metrics
