"""The dynamic batcher: forward threads fed by a token-bounded queue.

Requests from many clients are tokenised on their own threads and enqueued here; a forward
thread takes whatever is queued when it becomes free, so tokenising the next batch overlaps the
forward pass of the current one. Admission control refuses work beyond a queued token bound
instead of growing the queue forever, and items of requests whose client has gone are dropped
before they reach the model. A pass lost to a dying model process is rerun one input at a time
with nothing beside it, so an input that kills the model fails alone.

On a CPU, two forward threads with half the cores each beat one thread with all of them under
concurrent load: while one waits for its clients to send again, the other computes, and a
single-threaded forward pass never stalls at a parallel-region barrier because the event loop
took one of its cores (docs/benchmarks.md has the numbers). With the model in its own process
(`backends/torch/process_backend.py`) the same threads feed it, one pass each, so the child
runs two at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from embedgate.engine.backend import InputRefused, ModelUnavailable, PassLost
from embedgate.engine.batching import WorkItem, exact_length, plan_micro_batches
from embedgate.engine.fair_queue import DEFAULT_CALLER, FairQueue
from embedgate.engine.pooling import FloatArray
from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)


class PassGate:
    """Forward passes run side by side, except a retry of a lost pass, which runs with no
    other pass in flight: if it kills the model again, it takes no innocent batch along."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True  # no new pass starts; wait for those running
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class SchedulerObserver(Protocol):
    """What the scheduler reports (implemented by the Prometheus metrics)."""

    def queue_changed(self, items: int, tokens: int) -> None: ...

    def batch_done(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None: ...

    def dropped(self, items: int) -> None: ...

    def retried_alone(self, items: int) -> None: ...


class BatchScheduler:
    """Owns the queue and the forward threads that call the model."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Sequence[int]]], FloatArray],
        max_batch_tokens: int,
        max_queued_tokens: int,
        observer: SchedulerObserver | None = None,
        batch_wait: float = 0.0,
        workers: int = 1,
        pass_length: Callable[[int], int] = exact_length,
        max_queue_seconds: float | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("the scheduler needs at least one forward thread")
        self._run_batch = run_batch
        self._workers = workers
        self._batch_wait = batch_wait
        self._last_forward = 0.0
        self._max_batch_tokens = max_batch_tokens
        self._pass_length = pass_length  # the length `run_batch` pads a pass to
        self._max_queued_tokens = max_queued_tokens
        self._observer = observer
        self._queue = FairQueue(quantum=max(64, max_batch_tokens // 8))
        self._max_queue_seconds = max_queue_seconds
        self._rate = 0.0  # measured tokens/s of all forward threads together (EWMA)
        self._queued_tokens = 0
        self._in_flight_tokens = 0  # taken by a forward thread, not yet finished
        self._cond = threading.Condition()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._idle = 0  # forward threads waiting for work
        self._gate = PassGate()

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def free_threads(self) -> int:
        """Forward threads waiting for work right now."""
        return self._idle

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._threads = [
            threading.Thread(target=self._loop, name=f"embedgate-forward-{n}", daemon=True)
            for n in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            pending = self._queue.drain()
            self._queued_tokens = 0
            self._cond.notify_all()
        stopped = ServiceError(ErrorKind.NOT_READY, "the server is shutting down")
        for item in pending:
            item.request.fail(stopped)
        for thread in self._threads:
            thread.join(timeout=30)

    def submit(self, items: Sequence[WorkItem], caller: str = DEFAULT_CALLER) -> int:
        """Enqueue one request's items, or refuse the whole request when overloaded; the
        tokens queued. Callers are served in turn (`FairQueue`), so what one caller may
        queue is bounded by time: `max_queue_seconds` of measured throughput, beyond which
        its next request gets 429 with the seconds its queue needs to drain. A caller with
        nothing queued is always admitted (within the global token bound), so a request of
        any allowed size runs eventually; other callers' small requests keep flowing."""
        tokens = sum(item.tokens for item in items)
        with self._cond:
            if not self._running:
                raise ServiceError(ErrorKind.NOT_READY, "the embedding engine is not running")
            if self._queued_tokens and self._queued_tokens + tokens > self._max_queued_tokens:
                raise ServiceError(
                    ErrorKind.OVERLOADED,
                    f"the server is overloaded ({self._queued_tokens} tokens queued, bound "
                    f"{self._max_queued_tokens}); retry shortly",
                )
            self._admit_caller(caller, tokens)
            self._queue.extend(caller, list(items))
            self._queued_tokens += tokens
            self._report_queue()
            self._cond.notify()
        return tokens

    def _admit_caller(self, caller: str, tokens: int) -> None:
        """Refuse a caller whose queued work would take longer than `max_queue_seconds`."""
        limit, rate = self._max_queue_seconds, self._rate
        queued = self._queue.tokens_of(caller)
        if limit is None or rate <= 0 or not queued:
            return
        seconds = (queued + tokens) / rate
        if seconds > limit:
            wait = max(1, math.ceil(seconds - limit))
            raise ServiceError(
                ErrorKind.OVERLOADED,
                f"this key already has {queued} tokens queued (about {queued / rate:.0f} s of "
                f"model time); with this request it would be {seconds:.0f} s, over the "
                f"{limit:g} s bound; retry in {wait} s",
                retry_after_s=wait,
            )

    def _report_queue(self) -> None:
        if self._observer is not None:
            self._observer.queue_changed(len(self._queue), self._queued_tokens)

    def _next_window(self) -> tuple[list[WorkItem], int] | None:
        """The next window this thread runs, and its tokens (now in flight)."""
        with self._cond:
            self._idle += 1
            try:
                while self._running and not self._queue:
                    self._cond.wait()
                if self._idle == 1:  # no other thread is free to take the stragglers
                    self._coalesce()
                if not self._running:
                    return None
                window = self._queue.take(self._share())
            finally:
                self._idle -= 1
            if self._queue:  # more than this thread's share: wake another one for it
                self._cond.notify()
            tokens = sum(item.tokens for item in window)
            self._queued_tokens -= tokens
            self._in_flight_tokens += tokens
            self._report_queue()
            return window, tokens

    def _share(self) -> int:
        """A thread takes its even share of all outstanding work, queued and in flight.

        Two free threads split the queue; a thread that is free while another computes takes
        what is queued up to half of both. Taking all that is queued let the thread that
        coalesced first gather nearly every client while the other ran one-row passes, and
        since each thread mostly re-serves the clients it has just answered, such a split
        lasted a whole run (63 rows against 1; a one-row pass costs ~2.5x per row).
        """
        outstanding = self._queued_tokens + self._in_flight_tokens
        even = -(-outstanding // self._workers)
        return min(self._max_batch_tokens, even)

    def _coalesce(self) -> None:
        """Give clients that are about to send a moment to join the batch.

        Without this, the first request to arrive after a batch finishes runs alone and the
        rest wait a whole forward pass. The wait is bounded by a tenth of the last forward
        pass (so it never costs more than ~10% of compute) and by `batch_wait`; it ends early
        after a quiet gap of a quarter of that, or once the token budget is full. Only done
        when no other forward thread is free (a free one takes the stragglers at once, so
        waiting would only idle this one). Called with the lock held.
        """
        limit = min(self._batch_wait, 0.1 * self._last_forward)
        if limit <= 0:
            return
        deadline = time.monotonic() + limit
        quiet = limit / 4
        while self._running and self._queued_tokens < self._max_batch_tokens:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            before = len(self._queue)
            self._cond.wait(min(remaining, quiet))
            if len(self._queue) == before:
                return

    def _loop(self) -> None:
        while True:
            taken = self._next_window()
            if taken is None:
                return
            window, tokens = taken
            try:
                for batch in plan_micro_batches(window, self._max_batch_tokens, self._pass_length):
                    self._run(batch)
            finally:
                with self._cond:
                    self._in_flight_tokens -= tokens

    def _run(self, batch: list[WorkItem], alone: bool = False) -> None:
        live = [item for item in batch if not item.request.dead]
        dropped = [item for item in batch if item.request.dead]
        for item in dropped:
            item.request.drop()
        if dropped and self._observer is not None:
            self._observer.dropped(len(dropped))
        if not live:
            return
        started = time.perf_counter()
        try:
            with self._gate.exclusive() if alone else self._gate.shared():
                vectors = self._run_batch([item.sequence for item in live])
        except Exception as exc:
            if isinstance(exc, PassLost) and not alone:
                log.warning("a forward pass of %d inputs was lost: %s", len(live), exc)
                self._retry_alone(live)
                return
            error = _pass_error(exc)
            if error.kind is ErrorKind.BACKEND_FAILURE:
                log.exception("forward pass failed for a batch of %d inputs", len(live))
            for item in live:
                item.request.fail(error)
            return
        elapsed = time.perf_counter() - started
        self._last_forward = elapsed
        self._measure(sum(item.tokens for item in live), elapsed)
        by_request: dict[int, tuple[list[int], list[int]]] = {}
        for row, item in enumerate(live):
            rows, indices = by_request.setdefault(id(item.request), ([], []))
            rows.append(row)
            indices.append(item.index)
        requests = {id(item.request): item.request for item in live}
        for key, (rows, indices) in by_request.items():
            requests[key].deliver(indices, vectors[rows])
        if self._observer is not None:
            length = self._pass_length(max(item.tokens for item in live))
            tokens = sum(item.tokens for item in live)
            self._observer.batch_done(len(live), tokens, length * len(live), elapsed)

    def _measure(self, tokens: int, seconds: float) -> None:
        """Throughput for admission: each pass's tokens/s times the forward threads (which
        run side by side), smoothed; a rough figure is enough to bound waits in seconds."""
        if seconds <= 0 or tokens <= 0:
            return
        rate = tokens / seconds * self._workers
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate

    def _retry_alone(self, items: list[WorkItem]) -> None:
        """Rerun the inputs of a lost pass one at a time with nothing else in flight: an input
        that kills the model fails (after killing it once more), every other one gets its
        vector. A pass lost when alone is final, so a crash is never retried in a loop."""
        log.warning("retrying the %d inputs of a lost forward pass one at a time", len(items))
        if self._observer is not None:
            self._observer.retried_alone(len(items))
        for item in items:
            self._run([item], alone=True)


def _pass_error(exc: Exception) -> ServiceError:
    """What the callers of a failed pass are told: 503 while the model is being replaced,
    a 400 for an input that made the model exit even when run alone, 500 otherwise."""
    if isinstance(exc, ModelUnavailable):
        return ServiceError(
            ErrorKind.MODEL_UNAVAILABLE,
            f"the model is not available right now ({exc}); retry shortly",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, InputRefused):  # refused again with nothing else in the pass
        return exc.error
    if isinstance(exc, PassLost):  # lost again with nothing else in the pass
        return ServiceError(
            ErrorKind.INPUT_CRASHED_MODEL,
            "this input makes the model process exit (it did in its batch and again when run "
            "alone), so it is refused; the other requests in its batch were served",
            "input",
        )
    return ServiceError(ErrorKind.BACKEND_FAILURE, f"the model failed: {type(exc).__name__}")
