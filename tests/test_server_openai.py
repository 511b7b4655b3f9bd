"""A real uvicorn server on a loopback port, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from openai import AsyncOpenAI, OpenAI

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.backends.fake import FakeBackend
from support.servers import Server, fake_factory, running_server
from support.services import free_port


@pytest.fixture(scope="module")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # token ids on: one test sends the served model's own ids through the SDK
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openai"), accept_token_ids=True))
    with running_server(app, free_port()) as server:
        yield server


def _sample_is(metrics: str, family: str, value: float) -> bool:
    """The served model's sample of `family` (one model here; its `model` label) is `value`."""
    return any(
        line.startswith(family + "{") and float(line.rsplit(" ", 1)[1]) == value
        for line in metrics.splitlines()
    )


def sdk(server: Server) -> OpenAI:
    return OpenAI(base_url=server.base + "/v1", api_key=server.key, max_retries=0)


def test_float_and_base64_agree(minilm_server: Server, minilm_engine: EmbeddingEngine) -> None:
    client = sdk(minilm_server)
    texts = ["hello world", "a second, longer sentence for padding"]
    as_base64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # SDK default
    as_float = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    a = np.asarray([d.embedding for d in as_base64.data], dtype=np.float32)
    b = np.asarray([d.embedding for d in as_float.data], dtype=np.float32)
    assert a.shape == (2, 384) and np.array_equal(a, b)
    assert [d.index for d in as_float.data] == [0, 1]
    expected = minilm_engine.embed_sync(EmbedRequest(texts))
    # the server ran this small pass on ONNX Runtime (small_pass_runtime), the reference
    # engine on PyTorch: the same fp32 math, summed in another order
    assert np.abs(a - expected.vectors).max() <= 1e-5
    assert as_float.usage.prompt_tokens == expected.prompt_tokens == as_float.usage.total_tokens
    assert as_float.model == "all-MiniLM-L6-v2"


def test_token_id_inputs_through_the_sdk(
    minilm_server: Server, minilm_engine: EmbeddingEngine
) -> None:
    ids = minilm_engine.backend.tokenize(["hello world"])[0]
    got = sdk(minilm_server).embeddings.create(model="all-MiniLM-L6-v2", input=[ids])
    expected = minilm_engine.embed_sync(EmbedRequest(["hello world"])).vectors[0]
    assert np.allclose(got.data[0].embedding, expected, atol=1e-6)


@pytest.mark.anyio
async def test_many_concurrent_clients_get_their_own_results(
    minilm_server: Server, minilm_engine: EmbeddingEngine
) -> None:
    texts = [
        f"client number {i} asks about topic {i * 7 % 13}" + " more" * (i % 5) for i in range(64)
    ]
    expected = minilm_engine.embed_sync(EmbedRequest(texts)).vectors

    client = AsyncOpenAI(
        base_url=minilm_server.base + "/v1", api_key=minilm_server.key, max_retries=0
    )

    async def one(i: int) -> list[list[float]]:
        pair = [texts[i], texts[(i + 1) % 64]]
        response = await client.embeddings.create(model="all-MiniLM-L6-v2", input=pair)
        return [d.embedding for d in sorted(response.data, key=lambda d: d.index)]

    results = await asyncio.gather(*(one(i) for i in range(64)))
    await client.close()
    for i, pair in enumerate(results):
        assert np.allclose(pair[0], expected[i], atol=1e-5)
        assert np.allclose(pair[1], expected[(i + 1) % 64], atol=1e-5)
    metrics = minilm_server.get("/metrics").text
    assert "embedgate_batch_size_bucket" in metrics


def test_models_endpoint(minilm_server: Server) -> None:
    models = sdk(minilm_server).models.list()
    [model] = models.data
    assert model.id == "all-MiniLM-L6-v2"
    extra = model.model_dump()
    assert extra["dimensions"] == 384 and extra["dimensions_range"] == [384, 384]
    assert extra["max_input_tokens"] == 512


def test_sdk_sees_errors_as_api_errors(minilm_server: Server) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        sdk(minilm_server).embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=100)
    assert "384" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        sdk(minilm_server).embeddings.create(model="nope", input="x")


def test_disconnected_clients_are_dropped_before_the_model() -> None:
    fake = FakeBackend()
    fake.gate = threading.Event()
    app = create_app(Settings(self_test=False), fake_factory(fake))
    port = free_port()
    with running_server(app, port) as server:
        blocker = threading.Thread(
            target=lambda: server.post("/v1/embeddings", json={"input": "blocker"})
        )
        blocker.start()
        assert fake.entered.wait(10)
        body = b'{"input": "abandoned request"}'
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {server.key}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while not _sample_is(server.get("/metrics").text, "embedgate_queue_items", 1.0):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        time.sleep(0.2)  # the server notices the closed socket
        fake.gate.set()
        blocker.join(10)
        marker = fake.word_id("abandoned")
        assert not any(marker in seq for seq in fake.seen)
        metrics = server.get("/metrics").text
        assert _sample_is(metrics, "embedgate_dropped_inputs_total", 1.0)
        ok = server.post("/v1/embeddings", json={"input": "after"})
        assert ok.status_code == 200


def test_overload_is_429_in_the_envelope() -> None:
    fake = FakeBackend()
    fake.gate = threading.Event()
    app = create_app(Settings(self_test=False), fake_factory(fake, max_queued_tokens=8))
    with running_server(app, free_port()) as server:
        threads = [
            threading.Thread(target=lambda t=t: server.post("/v1/embeddings", json={"input": t}))
            for t in ("first", "second one here")
        ]
        threads[0].start()
        assert fake.entered.wait(10)
        threads[1].start()
        deadline = time.monotonic() + 10
        while not _sample_is(server.get("/metrics").text, "embedgate_queue_items", 1.0):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = server.post("/v1/embeddings", json={"input": "a b c d e f g h i"})
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "overloaded"
        assert response.headers["retry-after"] == "1"
        fake.gate.set()
        for t in threads:
            t.join(10)
        assert server.get("/health").status_code == 200
