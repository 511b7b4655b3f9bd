"""The rerank engine: (query, documents) in, one relevance score per document out.

It shares everything below the request with the embedding engine: the fair queue per caller,
token-bounded passes on the forward threads, admission control, dropping work whose caller
went away (`submission.py`, `scheduler.py`). Only the request differs: a pair of texts per
document becomes one sequence (`PairBackend.sequences`, as the model's authors build it), and
a row of the result is a score. Pure Python around a `PairBackend`; no HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedgate.engine.backend import PairBackend
from embedgate.engine.batching import exact_length
from embedgate.engine.delivery import CancelSignal
from embedgate.engine.fair_queue import DEFAULT_CALLER
from embedgate.engine.pooling import FloatArray
from embedgate.engine.rerank_spec import RerankSpec
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.submission import (
    Admit,
    EngineLimits,
    QueuedEngine,
    run_queued,
    run_queued_sync,
)
from embedgate.errors import ErrorKind, ServiceError

SMALL_REQUEST_CHARS = 4096  # pairs up to this size are tokenised on the event loop


@dataclass(frozen=True, kw_only=True)
class RerankRequest:
    query: str
    documents: Sequence[str]
    instruction: str | None = None  # Qwen3-Reranker's task; None: the model card's default
    caller: str = DEFAULT_CALLER  # whose turn it is in the fair queue


@dataclass(frozen=True)
class Scores:
    scores: FloatArray  # (n,) in the documents' order, each in [0, 1]
    tokens: int  # of every pair's sequence: what usage and token limits count


class RerankEngine(QueuedEngine):
    """One served reranker: pairs into sequences and rows into scores around the shared
    queue (`QueuedEngine`)."""

    def __init__(
        self,
        backend: PairBackend,
        name: str,
        aliases: Sequence[str] = (),
        limits: EngineLimits | None = None,
        observer: SchedulerObserver | None = None,
    ) -> None:
        self.backend = backend
        super().__init__(
            runtime=backend,
            name=name,
            aliases=aliases,
            limits=limits,
            observer=observer,
            run_batch=backend.forward,
            pass_length=exact_length,
            thread_name="embedgate-pairs",
        )

    @property
    def spec(self) -> RerankSpec:
        return self.backend.spec

    @property
    def max_input_tokens(self) -> int:
        """The longest sequence one pair becomes; longer pairs are cut as the model says."""
        return self.backend.max_tokens

    # --- the pipeline ------------------------------------------------------------------------
    def validate(self, request: RerankRequest) -> None:
        """Checks that need no tokenizer; cheap, so they run before any work is queued."""
        self.check_count(len(request.documents), "documents")
        if request.instruction is not None and not self.spec.takes_instructions:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                f"model {self.name} is a cross-encoder and takes no instruction",
                "instruction",
            )

    def sequences(self, request: RerankRequest) -> list[list[int]]:
        """The exact sequences the model scores, one per document."""
        sequences = self.backend.sequences(request.query, request.documents, request.instruction)
        total = sum(len(s) for s in sequences)
        if total > self.limits.max_request_tokens:
            raise ServiceError(
                ErrorKind.INPUT_TOO_LONG,
                f"the request has {total} tokens in all pairs, over the per-request limit of "
                f"{self.limits.max_request_tokens}; split the documents into several requests",
                "documents",
            )
        return sequences

    def _finish(self, rows: FloatArray, tokens: int) -> Scores:
        scores = rows[:, 0]
        if not np.isfinite(scores).all():
            raise ServiceError(
                ErrorKind.BACKEND_FAILURE, "the model produced non-finite scores for this input"
            )
        return Scores(scores, tokens)

    async def rerank(
        self,
        request: RerankRequest,
        cancelled: CancelSignal | None = None,
        admit: Admit | None = None,
    ) -> Scores:
        """Score from the event loop; set `cancelled` when the caller goes away, and
        `admit(tokens)` charges the token limit while the work waits (see `submission.py`)."""
        self.validate(request)
        size = len(request.query) * len(request.documents) + sum(map(len, request.documents))
        if size <= SMALL_REQUEST_CHARS:  # a thread hop would cost more than tokenising
            sequences = self.sequences(request)
        else:
            loop = asyncio.get_running_loop()
            sequences = await loop.run_in_executor(self._tokenizers, self.sequences, request)
        rows, tokens = await run_queued(
            self._scheduler,
            self._mailboxes,
            sequences,
            width=1,
            caller=request.caller,
            cancelled=cancelled,
            admit=admit,
        )
        return self._finish(rows, tokens)

    def rerank_sync(self, request: RerankRequest, cancel: CancelSignal | None = None) -> Scores:
        """Score from a plain thread (CLI, knowledge-base search, benchmarks)."""
        self.validate(request)
        rows, tokens = run_queued_sync(
            self._scheduler, self.sequences(request), width=1, caller=request.caller, cancel=cancel
        )
        return self._finish(rows, tokens)
