"""Several forward threads: they run side by side, split free work evenly, and the thread plan
gives a CPU two of them with the cores divided."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest, EngineConfig, EngineLimits, thread_plan
from embedgate.engine.backends.fake import FakeBackend
from embedgate.engine.pooling import FloatArray


class OverlapBackend(FakeBackend):
    """Records how many forward passes were running at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0
        self._count = threading.Lock()

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            return super().forward(sequences)
        finally:
            with self._count:
                self.running -= 1


def wait_until_free(engine: EmbeddingEngine, threads: int) -> None:
    deadline = time.monotonic() + 5
    while engine._scheduler.free_threads < threads:
        assert time.monotonic() < deadline, "forward threads never became free"
        time.sleep(0.005)


def test_two_threads_run_forward_passes_side_by_side() -> None:
    texts = [f"text number {i}" for i in range(40)]
    reference = EmbeddingEngine(FakeBackend(), "fake", limits=EngineLimits(max_batch_tokens=16))
    reference.start()
    expected = reference.embed_sync(EmbedRequest(texts)).vectors
    reference.stop()

    backend = OverlapBackend()
    engine = EmbeddingEngine(
        backend, "fake", limits=EngineLimits(max_batch_tokens=16, forward_threads=2)
    )
    engine.start()
    try:
        got = engine.embed_sync(EmbedRequest(texts)).vectors
    finally:
        engine.stop()
    assert backend.most == 2, "one bulk request must keep both threads busy"
    np.testing.assert_array_equal(got, expected)  # same rows, same order


@pytest.mark.parametrize(("threads", "batches"), [(2, [20, 20]), (1, [40])])
def test_free_threads_split_queued_work_evenly(threads: int, batches: list[int]) -> None:
    backend = FakeBackend()
    backend.gate = threading.Event()  # passes block until every thread has taken its share
    engine = EmbeddingEngine(backend, "fake", limits=EngineLimits(forward_threads=threads))
    engine.start()
    try:
        wait_until_free(engine, threads)
        caller = threading.Thread(
            target=engine.embed_sync,
            args=(EmbedRequest([[7]] * 40),),  # id + EOS: 2 tokens
        )
        caller.start()
        deadline = time.monotonic() + 5
        while not backend.entered.is_set() or engine.queued_tokens:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        backend.gate.set()
        caller.join(timeout=5)
    finally:
        backend.gate.set()
        engine.stop()
    assert sorted(backend.batches) == sorted(batches)


def test_a_thread_free_beside_a_busy_one_takes_half_of_all_outstanding_work() -> None:
    """Not all that is queued: that let one thread gather nearly every client of a steady
    load while the other ran one-row passes, for as long as the load lasted."""
    backend = FakeBackend()
    backend.gate = threading.Event()
    engine = EmbeddingEngine(backend, "fake", limits=EngineLimits(forward_threads=2))
    engine.start()
    callers = [
        threading.Thread(target=engine.embed_sync, args=(EmbedRequest(inputs),))
        for inputs in ([[7]], [[7]] * 20)  # id + EOS: 2 tokens each
    ]
    try:
        wait_until_free(engine, 2)
        callers[0].start()
        deadline = time.monotonic() + 5
        while not backend.entered.is_set() or engine._scheduler.free_threads != 1:
            assert time.monotonic() < deadline, "the first pass never started"
            time.sleep(0.005)
        callers[1].start()  # 40 tokens arrive while 2 are in flight
        while engine._scheduler.free_threads:
            assert time.monotonic() < deadline, "the free thread never took its share"
            time.sleep(0.005)
        assert engine.queued_tokens == 20  # it took (40 + 2) / 2 -> 10 inputs of 2 tokens
    finally:
        backend.gate.set()
        for caller in callers:
            if caller.ident is not None:  # started
                caller.join(timeout=5)
        engine.stop()
    assert sum(backend.batches) == 21  # the rest ran once the passes were let go


def test_one_thread_per_gpu_two_splitting_the_cores_of_a_cpu() -> None:
    assert thread_plan(EngineConfig(), on_gpu=False, cores=2) == (2, 1)
    assert thread_plan(EngineConfig(), on_gpu=False, cores=16) == (2, 8)
    assert thread_plan(EngineConfig(), on_gpu=False, cores=1) == (1, 1)
    assert thread_plan(EngineConfig(), on_gpu=True, cores=16) == (1, None)
    assert thread_plan(EngineConfig(forward_threads=4), on_gpu=False, cores=16) == (4, 4)
    assert thread_plan(EngineConfig(torch_threads=3), on_gpu=False, cores=16) == (2, 3)


def test_the_scheduler_needs_a_thread() -> None:
    from embedgate.engine.scheduler import BatchScheduler

    with pytest.raises(ValueError, match="at least one"):
        BatchScheduler(lambda seqs: np.zeros((len(seqs), 2), np.float32), 64, 64, workers=0)
