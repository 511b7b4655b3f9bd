"""Pure batch planning: which queued sequences go into which forward pass.

A window of work comes from the fair queue (`fair_queue.py`: callers in turn, each oldest
first) up to the token budget; here it is sorted by length and cut into micro-batches whose
padded size (rows x padded length) stays within the budget, so similar lengths share a
forward pass and padding is small.

A pass's length is its longest row rounded up to a multiple (16 by default). On a CPU, oneDNN
compiles a kernel for every new (rows x length) shape of a Linear layer (several ms each, and
memory that stays): with exact lengths, mixed traffic keeps producing new shapes and
pays that on a large share of its passes for ever. Rounded, a pass's rows x length is a
multiple of 16 no larger than the budget, so a model sees at most budget / 16 shapes per layer
and they are all compiled after a while. Rounding makes a batch that straddles a boundary
(rows of 47 and 50 tokens) pad all of its rows to the next multiple, so the planner also cuts
there when the padding saved outweighs one more pass (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from embedgate.engine.delivery import CancelFlag, CancelSignal, Completion
from embedgate.engine.pooling import FloatArray


@dataclass(eq=False)
class PendingRequest:
    """The rows of one request, filled in by the scheduler as its micro-batches finish."""

    size: int
    dimensions: int
    cancelled: CancelSignal = field(default_factory=CancelFlag)
    completion: Completion = field(default_factory=lambda: Future[FloatArray]())

    def __post_init__(self) -> None:
        self._rows = np.empty((self.size, self.dimensions), dtype=np.float32)  # all filled
        self._remaining = self.size
        self._lock = threading.Lock()

    @property
    def dead(self) -> bool:
        """True when nobody waits for the result any more (client gone or already failed)."""
        return self.cancelled.is_set() or self.completion.done()

    def deliver(self, indices: Sequence[int], vectors: FloatArray) -> None:
        with self._lock:
            self._rows[list(indices)] = vectors
            self._remaining -= len(indices)
            finished = self._remaining == 0
        if finished and not self.completion.done():
            self.completion.set_result(self._rows)

    def fail(self, error: BaseException) -> None:
        if not self.completion.done():
            self.completion.set_exception(error)

    def drop(self) -> None:
        self.completion.cancel()


@dataclass(eq=False)
class WorkItem:
    """One input of one request, already tokenised."""

    sequence: list[int]
    request: PendingRequest
    index: int

    @property
    def tokens(self) -> int:
        return len(self.sequence)


# Padding tokens a cut must save before it pays for one more forward pass (a pass's fixed
# cost: MiniLM on one CPU thread runs ~100 tokens' worth of work even for one short input).
SPLIT_SAVES_TOKENS = 128


def padded_length(longest: int, multiple: int) -> int:
    """The length a pass whose longest row is `longest` is padded to."""
    return -(-longest // multiple) * multiple


def exact_length(longest: int) -> int:
    return longest


def plan_micro_batches(
    items: Sequence[WorkItem],
    max_batch_tokens: int,
    pass_length: Callable[[int], int] = exact_length,
) -> list[list[WorkItem]]:
    """Sort by length and cut so each batch's padded size stays within the budget;
    `pass_length` is the backend's own rule for a pass's length (`Backend.pass_length`)."""
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    current_length = 0
    for item in sorted(items, key=lambda it: it.tokens):
        # sorted ascending: the newest item is the longest, so padded = rows * its length
        length = pass_length(item.tokens)
        if current and (
            (len(current) + 1) * length > max_batch_tokens
            or len(current) * (length - current_length) >= SPLIT_SAVES_TOKENS
        ):
            batches.append(current)
            current = []
        current.append(item)
        current_length = length
    if current:
        batches.append(current)
    return batches
