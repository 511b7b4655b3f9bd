"""What every served engine shares: its limits and batching queue (`QueuedEngine`), and
queueing a request's sequences and waiting for their rows (`run_queued`).

The embedding and rerank engines differ in how a request becomes sequences and what the rows
mean (vectors, scores); the scheduler and its threads, submitting to the fair queue, running
the admission check while the work waits, dropping work whose caller went away, and waking
the caller's event loop once per pass are the same for both, so they live here once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from embedgate.engine.backend import BackendDescription, BackendHealth
from embedgate.engine.batching import PendingRequest, WorkItem
from embedgate.engine.delivery import (
    CancelFlag,
    CancelSignal,
    Completion,
    LoopCompletion,
    LoopMailboxes,
)
from embedgate.engine.pooling import FloatArray
from embedgate.engine.scheduler import BatchScheduler, SchedulerObserver
from embedgate.errors import ErrorKind, ServiceError

Admit = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class EngineLimits:
    max_inputs: int = 2048
    max_request_tokens: int = 1_048_576
    max_batch_tokens: int = 16384
    max_queued_tokens: int = 1_048_576
    tokenizer_threads: int = 1
    batch_wait_ms: float = 0.0
    forward_threads: int = 1
    max_queue_seconds: float | None = None  # per caller, of measured model time


class Runtime(Protocol):
    """What the shared engine part needs of a backend (`Backend` and `PairBackend`)."""

    def describe(self) -> BackendDescription: ...
    def health(self) -> BackendHealth: ...
    def close(self) -> None: ...


class QueuedEngine:
    """One served model's names, limits, batching queue and the threads that tokenise large
    requests off the event loop; the embedding and rerank engines build on it."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        name: str,
        aliases: Sequence[str],
        limits: EngineLimits | None,
        observer: SchedulerObserver | None,
        run_batch: Callable[[Sequence[Sequence[int]]], FloatArray],
        pass_length: Callable[[int], int],
        thread_name: str,
    ) -> None:
        self.name = name
        self.aliases = tuple(aliases)
        self.limits = limits or EngineLimits()
        self._runtime = runtime
        self._scheduler = BatchScheduler(
            run_batch,
            self.limits.max_batch_tokens,
            self.limits.max_queued_tokens,
            observer,
            batch_wait=self.limits.batch_wait_ms / 1000,
            workers=self.limits.forward_threads,
            pass_length=pass_length,
            max_queue_seconds=self.limits.max_queue_seconds,
        )
        self._mailboxes = LoopMailboxes()
        self._tokenizers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.limits.tokenizer_threads, thread_name_prefix=thread_name
        )

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        self._scheduler.stop()
        self._tokenizers.shutdown(wait=False, cancel_futures=True)
        self._runtime.close()

    @property
    def queued_tokens(self) -> int:
        return self._scheduler.queued_tokens

    def serves(self, model: str | None) -> bool:
        return model is None or model == self.name or model in self.aliases

    def describe(self) -> BackendDescription:
        """What runs the model: runtime, dtype, device, quantisation, fingerprint."""
        return self._runtime.describe()

    def health(self) -> BackendHealth:
        """The backend's runtime state now (restarts, a process being replaced, upstreams)."""
        return self._runtime.health()

    def check_count(self, count: int, param: str) -> None:
        """A request's item count within the limit (cheap: before any work is queued)."""
        if count == 0:
            raise ServiceError(ErrorKind.INVALID_INPUT, f"{param} must not be empty", param)
        if count > self.limits.max_inputs:
            raise ServiceError(
                ErrorKind.TOO_MANY_INPUTS,
                f"{param} has {count} items; at most {self.limits.max_inputs} are allowed per "
                "request, split it into several requests",
                param,
            )


def enqueue(
    scheduler: BatchScheduler,
    sequences: Sequence[list[int]],
    *,
    width: int,
    cancelled: CancelSignal,
    completion: Completion,
    caller: str,
) -> int:
    """Queue the sequences (shortest first, so passes pad little); the tokens queued."""
    pending = PendingRequest(len(sequences), width, cancelled, completion)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    items = [WorkItem(sequences[i], pending, i) for i in order]
    return scheduler.submit(items, caller)


async def run_queued(
    scheduler: BatchScheduler,
    mailboxes: LoopMailboxes,
    sequences: Sequence[list[int]],
    *,
    width: int,
    caller: str,
    cancelled: CancelSignal | None = None,
    admit: Admit | None = None,
) -> tuple[FloatArray, int]:
    """(rows in input order, tokens) from the event loop. `admit(tokens)` runs once the
    tokens are known, while the work waits in the queue; if it raises, the work is dropped
    (unless the model already started on it; the result is then discarded)."""
    flag = cancelled or CancelFlag()
    if flag.is_set():
        raise asyncio.CancelledError
    completion = LoopCompletion(mailboxes.for_loop(asyncio.get_running_loop()))
    tokens = enqueue(
        scheduler, sequences, width=width, cancelled=flag, completion=completion, caller=caller
    )
    if admit is not None:
        try:
            await admit(tokens)
        except BaseException:
            flag.set()
            raise
    try:
        rows = await completion.waiter
    except asyncio.CancelledError:
        flag.set()
        raise
    return rows, tokens


def run_queued_sync(
    scheduler: BatchScheduler,
    sequences: Sequence[list[int]],
    *,
    width: int,
    caller: str,
    cancel: CancelSignal | None = None,
) -> tuple[FloatArray, int]:
    """The same from a plain thread; setting `cancel` drops the queued work."""
    done: concurrent.futures.Future[FloatArray] = concurrent.futures.Future()
    tokens = enqueue(
        scheduler,
        sequences,
        width=width,
        cancelled=cancel or CancelFlag(),
        completion=done,
        caller=caller,
    )
    return done.result(), tokens
