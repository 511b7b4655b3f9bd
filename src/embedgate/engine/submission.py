"""Queue a request's sequences and wait for their rows: what every engine does the same way.

The embedding and rerank engines differ in how a request becomes sequences and what the rows
mean (vectors, scores); submitting to the fair queue, running the admission check while the
work waits, dropping work whose caller went away, and waking the caller's event loop once per
pass are the same for both, so they live here once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Sequence

from embedgate.engine.batching import PendingRequest, WorkItem
from embedgate.engine.delivery import (
    CancelFlag,
    CancelSignal,
    Completion,
    LoopCompletion,
    LoopMailboxes,
)
from embedgate.engine.pooling import FloatArray
from embedgate.engine.scheduler import BatchScheduler

Admit = Callable[[int], Awaitable[None]]


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
