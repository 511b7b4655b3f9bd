"""An OpenAI-compatible `/v1/embeddings` server that misbehaves on request, on a real port:
the upstream a gateway must survive (slow, 500, 429 with Retry-After, wrong dimensions,
NaN, another model's vectors, refusing base64, refusing an input)."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from embedgate.engine import EmbeddingEngine, EngineConfig
from embedgate.engine.config import UpstreamConfig
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.submission import EngineLimits
from support.services import free_port


def vector_for(text: str, dimensions: int, model: str = "m") -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{model}|{text}".encode()).digest()[:8], "little")
    row = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return row / np.linalg.norm(row)


@dataclass
class Behaviour:
    # ok | slow | 500 | 429 | dims | nan | other-model | no-base64 | refuse | refuse-poison
    mode: str = "ok"
    dimensions: int = 32
    delay_s: float = 0.0
    calls: int = 0
    inputs: list[list[str]] = field(default_factory=list)


def app_for(behaviour: Behaviour) -> Starlette:
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        behaviour.calls += 1
        texts = body["input"]
        behaviour.inputs.append(texts)
        mode = behaviour.mode
        if mode == "slow" or behaviour.delay_s:
            import asyncio

            await asyncio.sleep(behaviour.delay_s or 5)
        if mode == "500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if mode == "429":
            return JSONResponse(
                {"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "7"}
            )
        if mode == "refuse" or (mode == "refuse-poison" and any("poison" in t for t in texts)):
            return JSONResponse({"error": {"message": "input too long"}}, status_code=400)
        if mode == "no-base64" and body.get("encoding_format") == "base64":
            return JSONResponse(
                {"error": {"message": "encoding_format base64 is not supported"}}, status_code=400
            )
        dims = behaviour.dimensions + (8 if mode == "dims" else 0)
        model = "other" if mode == "other-model" else "m"
        data = []
        for index, text in enumerate(texts):
            vector = vector_for(text, dims, model)
            if mode == "nan":
                vector[0] = np.nan
            encoded: object = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if body.get("encoding_format") == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        data.reverse()  # out of order on purpose: the client must use `index`
        return JSONResponse({"object": "list", "data": data, "model": body["model"]})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@contextmanager
def fake_upstream(behaviour: Behaviour) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app_for(behaviour), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def resetting_upstream() -> Iterator[str]:
    """Accepts connections and closes them at once (a reset mid-request)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def gateway_factory(model_dir: Path, upstream: str) -> Callable[..., EmbeddingEngine]:
    """An app engine factory for gateway mode: the model's tokenizer from `model_dir`, the
    forward passes on `upstream`, named like the fake engine so tests read the same."""

    def factory(config: EngineConfig, observer: SchedulerObserver) -> EmbeddingEngine:
        from embedgate.engine.backend import TextOptions
        from embedgate.engine.backends.gateway.backend import GatewayBackend

        backend = GatewayBackend.load(
            model_dir, TextOptions(pad_to_multiple_of=1), [UpstreamConfig(upstream, "m")]
        )
        return EmbeddingEngine(backend, "fake-qwen3", ("fake",), EngineLimits(), observer)

    return factory
