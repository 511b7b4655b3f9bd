"""Fair scheduling across callers, and admission by time (units: the queue and the scheduler
with a stand-in model). The same behaviour through a real server is in test_fairness.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedgate.engine.batching import PendingRequest, WorkItem
from embedgate.engine.fair_queue import FairQueue
from embedgate.engine.pooling import FloatArray
from embedgate.engine.scheduler import BatchScheduler
from embedgate.errors import ErrorKind, ServiceError


def work(n: int, tokens: int) -> list[WorkItem]:
    request = PendingRequest(n, 4)
    return [WorkItem([1] * tokens, request, i) for i in range(n)]


def test_a_small_caller_gets_into_the_next_window_behind_a_huge_one() -> None:
    queue = FairQueue(quantum=512)
    queue.extend("big", work(2048, 256))
    first = queue.take(4096)
    assert len(first) == 16  # a lone caller still fills whole windows
    queue.extend("small", work(1, 12))
    second = queue.take(4096)
    assert any(item.tokens == 12 for item in second)  # not after 2,000 others
    assert queue.tokens_of("small") == 0


def test_callers_take_turns_in_proportion_to_the_quantum() -> None:
    queue = FairQueue(quantum=256)
    for caller in ("a", "b", "c"):
        queue.extend(caller, work(100, 64))
    taken: dict[int, int] = {}
    for _ in range(10):
        for item in queue.take(768):
            taken[id(item.request)] = taken.get(id(item.request), 0) + 1
    assert len(taken) == 3 and max(taken.values()) - min(taken.values()) <= 4


def slow_model(delay: float) -> object:
    def run(sequences: Sequence[Sequence[int]]) -> FloatArray:
        time.sleep(delay)
        return np.ones((len(sequences), 4), dtype=np.float32)

    return run


def test_a_caller_over_its_time_bound_gets_429_with_a_retry_after_and_others_do_not() -> None:
    scheduler = BatchScheduler(
        slow_model(0.05),  # type: ignore[arg-type]
        max_batch_tokens=1000,
        max_queued_tokens=10_000_000,
        max_queue_seconds=1.0,
    )
    scheduler.start()
    try:
        warm = work(4, 100)  # measure the rate: ~400 tokens per 0.05 s pass
        scheduler.submit(warm, "greedy")
        warm[0].request.completion.result(timeout=10)
        first = work(200, 100)  # ~2.5 s of model time: admitted, the caller had none queued
        scheduler.submit(first, "greedy")
        with pytest.raises(ServiceError) as refused:
            scheduler.submit(work(10, 100), "greedy")
        assert refused.value.kind is ErrorKind.OVERLOADED
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
        other = work(1, 10)
        started = time.monotonic()
        scheduler.submit(other, "polite")  # another key is admitted and served promptly
        other[0].request.completion.result(timeout=10)
        assert time.monotonic() - started < 1.0
        first[0].request.completion.result(timeout=30)  # and the big one still completes
    finally:
        scheduler.stop()


def test_one_busy_caller_cannot_starve_another_under_threads() -> None:
    scheduler = BatchScheduler(
        slow_model(0.02),  # type: ignore[arg-type]
        max_batch_tokens=512,
        max_queued_tokens=10_000_000,
        workers=2,
    )
    scheduler.start()
    try:
        big = work(500, 128)
        scheduler.submit(big, "big")
        latencies = []
        for _ in range(10):
            small = work(1, 8)
            started = time.monotonic()
            scheduler.submit(small, "small")
            small[0].request.completion.result(timeout=10)
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 0.5, latencies  # a pass or two, not 125 passes
        done = threading.Event()
        big[0].request.completion.add_done_callback(lambda _: done.set())
        assert done.wait(60)
    finally:
        scheduler.stop()
