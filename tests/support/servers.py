"""Apps and real uvicorn servers for HTTP tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, EngineLimits
from embedgate.engine.backends.fake import FakeBackend
from embedgate.engine.scheduler import SchedulerObserver


def fake_factory(
    backend: FakeBackend | None = None, **limits: Any
) -> Callable[[Settings, SchedulerObserver], EmbeddingEngine]:
    def factory(settings: Settings, observer: SchedulerObserver) -> EmbeddingEngine:
        return EmbeddingEngine(
            backend or FakeBackend(), "fake-qwen3", ("fake",), EngineLimits(**limits), observer
        )

    return factory


def wait_ready(get: Callable[[str], Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server never became ready")


def wait_until(predicate: Callable[[], object], seconds: float = 15) -> bool:
    """Poll until `predicate()` is true; False when `seconds` passed first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def admin_key(app: FastAPI) -> str:
    """The bootstrap admin key the app wrote on first start."""
    settings: Settings = app.state.embedgate.settings
    return (settings.data_dir / "admin.key").read_text().strip()


@contextmanager
def client_for(app: FastAPI, authenticated: bool = True) -> Iterator[TestClient]:
    """A TestClient (lifespan run, model ready) that sends the admin key unless told not to."""
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client.get)
        if authenticated and app.state.embedgate.settings.auth:
            client.headers["Authorization"] = f"Bearer {admin_key(app)}"
        yield client


@dataclass
class Server:
    base: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.headers, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.base + path, headers=self.headers, timeout=30, **kw)


@contextmanager
def running_server(app: FastAPI, port: int) -> Iterator[Server]:
    """A real uvicorn server on a loopback port, in a thread of this process."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda path: httpx.get(base + path, timeout=5))
        yield Server(base, admin_key(app) if app.state.embedgate.settings.auth else "")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_job_done(http: httpx.Client, job_id: str, seconds: float = 60) -> dict[str, Any]:
    """Poll `GET /v1/jobs/{id}` until the ingest job succeeded or failed; its last state."""
    deadline = time.monotonic() + seconds
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)
    return dict(job)
