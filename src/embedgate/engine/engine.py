"""The embedding engine: validation, prompts, tokenisation, batching and post-processing.

Pure Python around a `Backend`; no HTTP. The API, the CLI, the self-test and the benchmarks all
call `EmbeddingEngine.embed` (async) or `embed_sync` (threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedgate.engine.backend import Backend
from embedgate.engine.delivery import (
    CancelSignal,
)
from embedgate.engine.fair_queue import DEFAULT_CALLER
from embedgate.engine.pooling import FloatArray
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.sequences import SequenceTemplate
from embedgate.engine.submission import (
    Admit,
    EngineLimits,
    QueuedEngine,
    run_queued,
    run_queued_sync,
)
from embedgate.errors import ErrorKind, ServiceError

InputType = Literal["query", "document"]


@dataclass(frozen=True)
class EmbedRequest:
    """Inputs are all texts or all token-id lists (the API layer enforces the shape)."""

    inputs: Sequence[str] | Sequence[Sequence[int]]
    dimensions: int | None = None
    input_type: InputType | None = None
    instruction: str | None = None
    truncate: bool = False
    caller: str = DEFAULT_CALLER  # whose turn it is in the fair queue (an API key, a job)


@dataclass(frozen=True)
class Embeddings:
    vectors: FloatArray
    prompt_tokens: int


@dataclass(frozen=True)
class InputPreview:
    """What the model is given for one text input: the text after the prompt rules (the
    Qwen3 instruction, a MiniLM prompt), and its token count with special tokens."""

    text: str
    tokens: int
    truncated: bool


INLINE_TOKENIZE_CHARS = 2048


def _is_small(request: EmbedRequest) -> bool:
    """Requests cheap enough to tokenise on the event loop without stalling it."""
    if len(request.inputs) > 8:
        return False
    return sum(len(item) for item in request.inputs) <= INLINE_TOKENIZE_CHARS


class EmbeddingEngine(QueuedEngine):
    """One served embedding model: prompts, tokenisation and post-processing around the
    shared queue (`QueuedEngine`)."""

    def __init__(
        self,
        backend: Backend,
        name: str,
        aliases: Sequence[str] = (),
        limits: EngineLimits | None = None,
        observer: SchedulerObserver | None = None,
    ) -> None:
        self.backend = backend
        self.spec = backend.spec
        super().__init__(
            runtime=backend,
            name=name,
            aliases=aliases,
            limits=limits,
            observer=observer,
            run_batch=self._forward,
            pass_length=backend.pass_length,
            thread_name="embedgate-tokenize",
        )

    @property
    def template(self) -> SequenceTemplate:
        """How a text's content ids become the sequence the model sees (special tokens,
        the longest sequence, the Qwen3 EOS)."""
        return self.backend.template

    @property
    def max_input_tokens(self) -> int:
        return self.backend.template.max_tokens

    @property
    def max_content_tokens(self) -> int:
        """The most content tokens a text may have before its sequence would be cut."""
        return self.backend.template.max_tokens - self.backend.template.overhead

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Content tokens per text, as the model's tokenizer counts them (no prompt, no
        special tokens): what the chunker sizes chunks by."""
        return [len(ids) for ids in self.backend.tokenize(texts)]

    # --- the pipeline ------------------------------------------------------------------------
    def validate(self, request: EmbedRequest) -> None:
        """Checks that need no tokenizer; cheap, so they run before any work is queued."""
        self.check_count(len(request.inputs), "input")
        self.check_dimensions(request.dimensions)
        if request.instruction is not None:
            if not self.spec.takes_instructions:
                raise ServiceError(
                    ErrorKind.INVALID_REQUEST,
                    f"model {self.name} does not take instructions; use input_type instead",
                    "instruction",
                )
            if request.input_type == "document":
                raise ServiceError(
                    ErrorKind.INVALID_REQUEST,
                    "instruction applies to queries only; documents are embedded without one",
                    "instruction",
                )

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None:
            return
        low, high = self.spec.min_dimensions, self.spec.native_dimensions
        if (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not (low <= dimensions <= high)
        ):
            if low == high:
                message = f"model {self.name} only supports dimensions={high} (its native size)"
            else:
                message = f"dimensions must be an integer from {low} to {high} for {self.name}"
            raise ServiceError(
                ErrorKind.INVALID_DIMENSIONS, f"{message}; got {dimensions!r}", "dimensions"
            )

    def tokenize(self, request: EmbedRequest) -> list[list[int]]:
        """Prompts, tokenizer and template: the exact sequences the model will see."""
        template = self.backend.template
        if request.inputs and isinstance(request.inputs[0], str):
            _, _, sequences = self._text_sequences(request)
        else:
            if request.input_type is not None or request.instruction is not None:
                raise ServiceError(
                    ErrorKind.INVALID_REQUEST,
                    "input_type and instruction apply to text inputs, not token ids",
                    "input_type",
                )
            sequences = [
                template.wrap_token_ids(list(ids), i, request.truncate)  # type: ignore[arg-type]
                for i, ids in enumerate(request.inputs)
            ]
        total = sum(len(s) for s in sequences)
        if total > self.limits.max_request_tokens:
            raise ServiceError(
                ErrorKind.INPUT_TOO_LONG,
                f"the request has {total} tokens in all, over the per-request limit of "
                f"{self.limits.max_request_tokens}; split it into several requests",
                "input",
            )
        return sequences

    def _text_sequences(
        self, request: EmbedRequest
    ) -> tuple[list[str], list[list[int]], list[list[int]]]:
        """(prompted texts, their content ids, full sequences) for text inputs."""
        texts = [
            self.spec.apply_prompt(str(text), request.input_type, request.instruction)
            for text in request.inputs
        ]
        contents = self.backend.tokenize(texts)
        template = self.backend.template
        sequences = [
            template.wrap(content, i, request.truncate) for i, content in enumerate(contents)
        ]
        return texts, contents, sequences

    def preview(self, request: EmbedRequest) -> list[InputPreview]:
        """The texts and token counts `embed` would send to the model, without running it
        (the console's embeddings playground shows them; limits apply as in `embed`)."""
        self.validate(request)
        if not request.inputs or not isinstance(request.inputs[0], str):
            raise ServiceError(
                ErrorKind.INVALID_REQUEST, "preview takes text inputs, not token ids", "input"
            )
        texts, contents, sequences = self._text_sequences(request)
        room = self.max_content_tokens
        return [
            InputPreview(text, len(sequence), len(content) > room)
            for text, content, sequence in zip(texts, contents, sequences, strict=True)
        ]

    def _forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """One forward pass, post-processed at the native size for all of its rows at once
        (on a forward thread, not once per request on the event loop)."""
        return self.backend.postprocess(self.backend.forward(sequences), None)

    def _finish(self, rows: FloatArray, request: EmbedRequest, tokens: int) -> Embeddings:
        vectors = rows
        if request.dimensions is not None:  # Matryoshka: slice, then renormalise
            vectors = self.backend.postprocess(rows, request.dimensions)
        if not np.isfinite(vectors).all():
            raise ServiceError(
                ErrorKind.BACKEND_FAILURE,
                "the model produced non-finite values (NaN or Inf) for this input",
            )
        return Embeddings(vectors, tokens)

    async def embed(
        self,
        request: EmbedRequest,
        cancelled: CancelSignal | None = None,
        admit: Admit | None = None,
    ) -> Embeddings:
        """Embed from the event loop; set `cancelled` when the caller goes away.

        `admit(tokens)` runs once the real token count is known; if it raises, the request
        fails with that error and its queued work is dropped (the token rate limit charges
        there).
        """
        self.validate(request)
        loop = asyncio.get_running_loop()
        if _is_small(request):  # a thread hop would cost more than tokenising
            sequences = self.tokenize(request)
        else:
            sequences = await loop.run_in_executor(self._tokenizers, self.tokenize, request)
        rows, tokens = await run_queued(
            self._scheduler,
            self._mailboxes,
            sequences,
            width=self.spec.native_dimensions,
            caller=request.caller,
            cancelled=cancelled,
            admit=admit,
        )
        return self._finish(rows, request, tokens)

    def embed_sync(self, request: EmbedRequest, cancel: CancelSignal | None = None) -> Embeddings:
        """Embed from a plain thread (CLI, benchmarks, self-test, ingest). Setting `cancel`
        drops the request's queued inputs; waiting then ends in `CancelledError`."""
        self.validate(request)
        sequences = self.tokenize(request)
        rows, tokens = run_queued_sync(
            self._scheduler,
            sequences,
            width=self.spec.native_dimensions,
            caller=request.caller,
            cancel=cancel,
        )
        return self._finish(rows, request, tokens)
