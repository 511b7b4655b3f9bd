"""A forward pass lost to a dying model process costs only the input that killed it.

The fake model here dies like the real one would: a pass holding the "killer" input is lost,
and so is every pass running at the same moment (they share the process). The scheduler must
rerun the lost inputs one at a time with nothing beside them, so the innocent ones get the
same vectors as on a healthy model and only the killer's request fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest, EngineLimits
from embedgate.engine.backend import PassLost
from embedgate.engine.backends.fake import FakeBackend
from embedgate.engine.pooling import FloatArray
from embedgate.engine.scheduler import PassGate
from embedgate.errors import ErrorKind, ServiceError
from embedgate.services.metrics import Metrics

KILLER = "this input crashes the model"


class DyingProcessBackend(FakeBackend):
    """A shared model process that dies whenever it runs the killer input."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.01
        self.killer = self.tokenize([KILLER])[0]
        self.running = 0
        self.alone_when_killed: list[bool] = []  # per death: was the killer's pass alone?
        self.generation = 0  # bumped at each death; passes begun before it are lost
        self._state = threading.Lock()

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        with self._state:
            self.running += 1
            born = self.generation
        try:
            out = super().forward(sequences)
            with self._state:
                if any(list(s[: len(self.killer)]) == self.killer for s in sequences):
                    self.alone_when_killed.append(self.running == 1)
                    self.generation += 1
                if self.generation != born:
                    raise PassLost("the model process exited (exit code -11)")
            return out
        finally:
            with self._state:
                self.running -= 1


def engine_on(
    backend: FakeBackend, threads: int = 2, metrics: Metrics | None = None
) -> EmbeddingEngine:
    limits = EngineLimits(max_batch_tokens=64, forward_threads=threads)
    observer = metrics.for_model("fake", max_queued_tokens=1024) if metrics else None
    engine = EmbeddingEngine(backend, "fake", limits=limits, observer=observer)
    engine.start()
    return engine


async def embed_all(engine: EmbeddingEngine, texts: list[str]) -> list[object]:
    async def one(text: str) -> object:
        try:
            return (await engine.embed(EmbedRequest([text]))).vectors[0]
        except ServiceError as exc:
            return exc

    return list(await asyncio.gather(*(one(t) for t in texts)))


@pytest.mark.anyio
async def test_only_the_input_that_kills_the_model_fails() -> None:
    texts = [f"innocent text number {i}" for i in range(40)]
    texts.insert(17, KILLER)
    healthy = engine_on(FakeBackend())
    expected = healthy.embed_sync(EmbedRequest(texts)).vectors
    healthy.stop()

    backend = DyingProcessBackend()
    metrics = Metrics()
    engine = engine_on(backend, metrics=metrics)
    try:
        results = await embed_all(engine, texts)
    finally:
        engine.stop()
    for text, want, got in zip(texts, expected, results, strict=True):
        if text == KILLER:
            assert isinstance(got, ServiceError) and got.kind is ErrorKind.INPUT_CRASHED_MODEL
        else:
            assert isinstance(got, np.ndarray), f"{text!r} failed: {got}"
            assert np.abs(got - want).max() <= 1e-6
    # it died once in a batch, then once more alone, and nothing else was lost with it
    assert backend.alone_when_killed[-1] is True
    assert len(backend.alone_when_killed) == 2
    retried = [
        line
        for line in metrics.render().decode().splitlines()
        if line.startswith('embedgate_lost_pass_inputs_retried_total{model="fake"} ')
    ]
    assert len(retried) == 1 and float(retried[0].split()[1]) >= 1  # the killer, its batch


def test_a_failure_that_is_not_a_lost_pass_is_not_retried() -> None:
    backend = FakeBackend()
    calls: list[int] = []

    def broken(sequences: Sequence[Sequence[int]]) -> FloatArray:
        calls.append(len(sequences))
        raise ValueError("shape mismatch")

    backend.forward = broken  # type: ignore[method-assign]
    engine = engine_on(backend, threads=1)
    try:
        with pytest.raises(ServiceError) as caught:
            engine.embed_sync(EmbedRequest(["one text", "another text", "a third"]))
    finally:
        engine.stop()
    assert caught.value.kind is ErrorKind.BACKEND_FAILURE
    assert calls == [3]


def test_an_exclusive_pass_waits_for_running_ones_and_holds_off_new_ones() -> None:
    gate = PassGate()
    log: list[str] = []
    first_in = threading.Event()

    def shared(name: str, hold: float) -> None:
        with gate.shared():
            log.append(f"{name} in")
            first_in.set()
            time.sleep(hold)
            log.append(f"{name} out")

    def exclusive() -> None:
        with gate.exclusive():
            log.append("alone in")
            time.sleep(0.05)
            log.append("alone out")

    running = threading.Thread(target=shared, args=("a", 0.1))
    running.start()
    first_in.wait(5)
    alone = threading.Thread(target=exclusive)
    alone.start()
    time.sleep(0.02)  # the exclusive pass is now waiting for "a"
    later = threading.Thread(target=shared, args=("b", 0.0))
    later.start()
    for thread in (running, alone, later):
        thread.join(5)
    assert log == ["a in", "a out", "alone in", "alone out", "b in", "b out"]
