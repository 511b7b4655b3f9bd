"""The engine around the model, on the deterministic fake backend: limits, ordering,
admission control, disconnect handling and the tokenise/forward overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest, EngineLimits
from embedgate.engine.backends.fake import FakeBackend, fake_spec
from embedgate.errors import ErrorKind, ServiceError


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def engine(fake: FakeBackend) -> Iterator[EmbeddingEngine]:
    e = EmbeddingEngine(fake, "fake", limits=EngineLimits(max_batch_tokens=256))
    e.start()
    yield e
    if fake.gate is not None:
        fake.gate.set()
    e.stop()


def kind_of(call: object) -> ErrorKind:
    with pytest.raises(ServiceError) as info:
        call()  # type: ignore[operator]
    return info.value.kind


def test_results_are_in_input_order(engine: EmbeddingEngine, fake: FakeBackend) -> None:
    texts = [f"text number {i} " + "pad " * (i % 7) for i in range(50)]
    together = engine.embed_sync(EmbedRequest(texts)).vectors
    for i in (0, 13, 49):
        assert np.array_equal(together[i], engine.embed_sync(EmbedRequest([texts[i]])).vectors[0])
    assert len(fake.batches) > 1  # the 256-token budget forced several micro-batches


@pytest.mark.anyio
async def test_concurrent_requests_get_their_own_results(engine: EmbeddingEngine) -> None:
    texts = [f"client {i} says hello" for i in range(64)]
    expected = engine.embed_sync(EmbedRequest(texts)).vectors

    results = await asyncio.gather(*(engine.embed(EmbedRequest([t])) for t in texts))
    got = [r.vectors[0] for r in results]
    assert all(np.array_equal(got[i], expected[i]) for i in range(64))


def test_limits_give_clear_errors(engine: EmbeddingEngine) -> None:
    assert (
        kind_of(lambda: engine.embed_sync(EmbedRequest(["a"] * 2049))) is ErrorKind.TOO_MANY_INPUTS
    )
    with pytest.raises(ServiceError) as info:
        engine.embed_sync(EmbedRequest(["word " * 600]))
    assert info.value.kind is ErrorKind.INPUT_TOO_LONG
    assert "601 tokens" in info.value.message and "512" in info.value.message
    truncated = engine.embed_sync(EmbedRequest(["word " * 600], truncate=True))
    assert truncated.prompt_tokens == 512


def test_request_token_bound(fake: FakeBackend) -> None:
    e = EmbeddingEngine(fake, "fake", limits=EngineLimits(max_request_tokens=100))
    e.start()
    try:
        with pytest.raises(ServiceError) as info:
            e.embed_sync(EmbedRequest(["one two three four five"] * 20))
        assert "120 tokens" in info.value.message and "100" in info.value.message
    finally:
        e.stop()


@pytest.mark.parametrize("dims", [0, -1, 31, 65, True, 1.5, "512"])
def test_bad_dimensions(engine: EmbeddingEngine, dims: object) -> None:
    request = EmbedRequest(["a"], dimensions=dims)  # type: ignore[arg-type]
    assert kind_of(lambda: engine.embed_sync(request)) is ErrorKind.INVALID_DIMENSIONS


@pytest.mark.parametrize("dims", [32, 48, 64])
def test_valid_dimensions_give_unit_vectors(engine: EmbeddingEngine, dims: int) -> None:
    vectors = engine.embed_sync(EmbedRequest(["a b", "c"], dimensions=dims)).vectors
    assert vectors.shape == (2, dims)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_models_without_matryoshka_only_take_native_size() -> None:
    e = EmbeddingEngine(FakeBackend(fake_spec(dimensions=48, matryoshka=False)), "plain")
    e.check_dimensions(48)
    with pytest.raises(ServiceError, match="only supports dimensions=48"):
        e.check_dimensions(32)


@pytest.mark.parametrize("token", [-1, 30_000, 2**31])
def test_token_ids_outside_vocabulary(engine: EmbeddingEngine, token: int) -> None:
    with pytest.raises(ServiceError) as info:
        engine.embed_sync(EmbedRequest([[5, token]]))
    assert info.value.kind is ErrorKind.TOKEN_OUT_OF_VOCABULARY
    assert "check_embedding_ctx_length=False" in info.value.message


def test_non_finite_model_output_is_a_clean_error() -> None:
    fake = FakeBackend(poison_token=FakeBackend().word_id("poison"))
    e = EmbeddingEngine(fake, "fake")
    e.start()
    try:
        with pytest.raises(ServiceError) as info:
            e.embed_sync(EmbedRequest(["this is poison"]))
        assert info.value.kind is ErrorKind.BACKEND_FAILURE
        assert e.embed_sync(EmbedRequest(["healthy"])).vectors.shape == (1, 64)
    finally:
        e.stop()


@pytest.mark.anyio
async def test_tokenisation_overlaps_the_forward_pass(
    engine: EmbeddingEngine, fake: FakeBackend
) -> None:
    """While the model is busy with one batch, the next request is already tokenised."""
    fake.gate = threading.Event()

    first = asyncio.ensure_future(engine.embed(EmbedRequest(["first request"])))
    await asyncio.to_thread(fake.entered.wait, 5)
    started = time.perf_counter()
    second = asyncio.ensure_future(engine.embed(EmbedRequest(["second request here"])))
    while engine.queued_tokens == 0:  # tokenised and queued while forward #1 still runs
        assert time.perf_counter() - started < 5
        await asyncio.sleep(0.005)
    assert not first.done()
    fake.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, second)
    assert fake.batches == [1, 1]


@pytest.mark.anyio
async def test_admission_control_refuses_when_queue_is_full(fake: FakeBackend) -> None:
    e = EmbeddingEngine(fake, "fake", limits=EngineLimits(max_queued_tokens=10))
    e.start()
    fake.gate = threading.Event()
    try:
        busy = asyncio.ensure_future(e.embed(EmbedRequest(["one"])))
        await asyncio.to_thread(fake.entered.wait, 5)
        queued = asyncio.ensure_future(e.embed(EmbedRequest(["two three four five six"])))
        while e.queued_tokens == 0:
            await asyncio.sleep(0.005)
        with pytest.raises(ServiceError) as info:
            await e.embed(EmbedRequest(["seven eight nine ten"]))
        assert info.value.kind is ErrorKind.OVERLOADED
        fake.gate.set()
        await asyncio.gather(busy, queued)
    finally:
        fake.gate.set()
        e.stop()


@pytest.mark.anyio
async def test_cancelled_requests_never_reach_the_model(
    engine: EmbeddingEngine, fake: FakeBackend
) -> None:
    fake.gate = threading.Event()
    marker = fake.word_id("abandoned")

    busy = asyncio.ensure_future(engine.embed(EmbedRequest(["busy"])))
    await asyncio.to_thread(fake.entered.wait, 5)
    gone = threading.Event()
    abandoned = asyncio.ensure_future(engine.embed(EmbedRequest(["abandoned"]), gone))
    while engine.queued_tokens == 0:
        await asyncio.sleep(0.005)
    gone.set()  # the client disconnected while queued
    fake.gate.set()  # type: ignore[union-attr]
    await busy
    await asyncio.sleep(0.05)
    abandoned.cancel()
    assert not any(marker in seq for seq in fake.seen)


@pytest.mark.anyio
async def test_requests_arriving_together_share_a_batch(fake: FakeBackend) -> None:
    """After a slow forward pass, a burst of clients is coalesced instead of running one by one."""
    e = EmbeddingEngine(fake, "fake", limits=EngineLimits(batch_wait_ms=200))
    e.start()
    try:
        fake.delay = 1.0
        e.embed_sync(EmbedRequest(["warm up"]))  # the last forward took ~1 s: wait <= 100 ms
        fake.delay = 0.0

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.002)
            await e.embed(EmbedRequest([f"client {i}"]))

        await asyncio.gather(*(one(i) for i in range(5)))
        assert fake.batches[1:] == [5]
    finally:
        e.stop()


def test_no_coalescing_wait_when_disabled(fake: FakeBackend) -> None:
    e = EmbeddingEngine(fake, "fake", limits=EngineLimits(batch_wait_ms=0))
    e.start()
    try:
        fake.delay = 0.05
        e.embed_sync(EmbedRequest(["warm up"]))
        started = time.perf_counter()
        e.embed_sync(EmbedRequest(["alone"]))
        assert time.perf_counter() - started < 0.5
    finally:
        e.stop()


def test_metrics_count_the_padded_length_the_model_computes() -> None:
    from embedgate.services.metrics import Metrics

    fake = FakeBackend()
    fake.pad_to_multiple_of = 16
    metrics = Metrics()
    limits = EngineLimits(max_batch_tokens=4096)
    observer = metrics.for_model("fake", max_queued_tokens=limits.max_queued_tokens)
    engine = EmbeddingEngine(fake, "fake", limits=limits, observer=observer)
    engine.start()
    try:
        # 3 and 19 words plus the fake's end token: 4 and 20 tokens, one pass of 2 x 32
        engine.embed_sync(EmbedRequest(["a b c", " ".join(["w"] * 19)]))
    finally:
        engine.stop()
    text = metrics.render().decode()
    assert 'embedgate_batch_tokens_sum{model="fake"} 24.0' in text
    assert 'embedgate_batch_padded_tokens_total{model="fake"} 64.0' in text
