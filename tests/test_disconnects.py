"""The embeddings endpoint's wait: a client that leaves is noticed and its work dropped, while
any other cancellation (server shutdown) still propagates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from embedgate.api.embeddings import _embed_unless_gone
from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.backends.fake import FakeBackend


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def engine(fake: FakeBackend) -> Iterator[EmbeddingEngine]:
    e = EmbeddingEngine(fake, "fake")
    e.start()
    yield e
    e.stop()


async def _no_limit(tokens: int) -> None:
    return None


class Client:
    """The ASGI receive side of a client that has sent its body and may hang up."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


@pytest.mark.anyio
async def test_a_connected_client_gets_its_vectors(engine: EmbeddingEngine) -> None:
    client = Client()
    result = await _embed_unless_gone(engine, EmbedRequest(["hello"]), _no_limit, client.receive)
    assert result is not None and result.vectors.shape == (1, 64)
    client.gone.set()  # hanging up after the answer changes nothing
    await asyncio.sleep(0.01)


async def _queued_behind_a_busy_pass(
    engine: EmbeddingEngine, fake: FakeBackend, text: str, client: Client
) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
    """(the pass holding the model, the endpoint's wait for `text`, queued behind it)."""
    busy = asyncio.ensure_future(engine.embed(EmbedRequest(["busy"])))
    await asyncio.to_thread(fake.entered.wait, 5)
    waiting = asyncio.ensure_future(
        _embed_unless_gone(engine, EmbedRequest([text]), _no_limit, client.receive)
    )
    while engine.queued_tokens == 0:
        await asyncio.sleep(0.005)
    return busy, waiting


@pytest.mark.anyio
async def test_a_client_that_leaves_while_queued_is_dropped(
    engine: EmbeddingEngine, fake: FakeBackend
) -> None:
    fake.gate = threading.Event()

    client = Client()
    busy, waiting = await _queued_behind_a_busy_pass(engine, fake, "abandoned", client)
    client.gone.set()
    assert await asyncio.wait_for(waiting, 5) is None  # the caller answers 499
    fake.gate.set()  # type: ignore[union-attr]
    await busy
    assert not any(fake.word_id("abandoned") in seq for seq in fake.seen)


@pytest.mark.anyio
async def test_other_cancellations_propagate_and_drop_the_work(
    engine: EmbeddingEngine, fake: FakeBackend
) -> None:
    fake.gate = threading.Event()

    busy, waiting = await _queued_behind_a_busy_pass(engine, fake, "shutdown", Client())
    waiting.cancel()  # e.g. the server shutting down, not the client leaving
    with pytest.raises(asyncio.CancelledError):
        await waiting
    fake.gate.set()  # type: ignore[union-attr]
    await busy
    assert not any(fake.word_id("shutdown") in seq for seq in fake.seen)
