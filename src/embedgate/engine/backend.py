"""The model boundary: tokenise, forward, post-process.

The engine core only talks to this interface; each runtime implements it in its own package
under `backends/` (PyTorch, llama.cpp, upstream servers), and `backends/fake.py` is a
deterministic stand-in for tests of everything around the model. Like text-embeddings-
inference's backend trait it is small: tokenise, forward a pass, close, and one record each
for the runtime's health and its description.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from embedgate.engine.batching import padded_length
from embedgate.engine.model_spec import ModelSpec
from embedgate.engine.pooling import FloatArray, finalize
from embedgate.engine.rerank_spec import RerankSpec
from embedgate.engine.sequences import SequenceTemplate
from embedgate.errors import ServiceError


@dataclass(frozen=True)
class WeightOptions:
    """How a PyTorch backend loads its weights, in this process or in a model process."""

    dtype: str = "float32"
    device: str = "auto"
    onednn: bool = True  # on a CPU, pack Linear weights for oneDNN (`backends/torch/onednn.py`)


@dataclass(frozen=True)
class TextOptions:
    """How a backend's tokenizer side turns inputs into forward passes."""

    max_input_tokens: int | None = None  # lower than the model's own limit, or None
    pad_to_multiple_of: int = 16  # a pass's length, rounded up (see `batching.py`)


UPSTREAM_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class UpstreamStats:
    """One upstream's counters, for /metrics (read when scraped)."""

    name: str
    healthy: bool
    in_flight: int
    requests: int
    errors: int
    retries: int
    ejections: int
    latency_buckets: tuple[int, ...]  # cumulative counts per UPSTREAM_LATENCY_BUCKETS
    latency_count: int
    latency_sum: float


class ModelUnavailable(RuntimeError):
    """What `forward` raises when no model can run the pass within the wait it allows (its
    process is being restarted, or restarts were given up); not the inputs' fault, so the
    caller answers 503 with a Retry-After, never 500."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PassLost(RuntimeError):
    """What `forward` raises when a pass failed for a reason that need not be its inputs'
    (the process running it died: another pass crashed it, or the whole batch ran out of
    memory); the scheduler then reruns the inputs one at a time."""


class InputRefused(PassLost):
    """What `forward` raises when the model's server refused an input of the pass (gateway
    mode: an upstream's 4xx). Like a lost pass, its inputs are rerun one at a time, so only
    the input it was about fails, with `error` (a 400 in the OpenAI envelope)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class BackendHealth:
    """A backend's runtime state at one instant: what readiness, the model supervisor and
    /metrics read. The defaults describe a backend that is always able to run a pass."""

    unavailable: str | None = None  # why no pass can run now (restarting, no upstream)
    gave_up: str | None = None  # why restarts stopped for good; the server should exit
    restarts: int = 0  # times the model's process died and was replaced
    restart_failures: int = 0  # replacements that failed to start (each retried)
    ready_in_s: float = 0.0  # until a pass can run again, as best known
    model_pid: int | None = None  # the model's own process (its memory is not ours)
    upstreams: tuple[UpstreamStats, ...] = ()  # gateway mode's upstreams


@dataclass(frozen=True)
class BackendDescription:
    """What a backend runs, for /v1/models, `embedgate inspect`, logs and the self-test."""

    runtime: str  # "torch", "torch-process", "gguf", "gateway", "fake"
    dtype: str  # the weights' dtype, a GGUF quantisation type, or "upstream"
    device: str
    quantization: str | None = None  # a quantised file's type (GGUF: Q4_K_M, Q8_0...)
    fingerprint: str | None = None  # names the vectors beyond the model's name (gateway)


class Backend(ABC):
    """A loaded model: its facts, its tokenizer and its forward pass.

    The seam every runtime implements and all the engine core knows; whatever only one
    runtime has (a model process, upstreams, a GGUF file) stays in its package and reaches
    the rest of the server through `health()` and `describe()`."""

    spec: ModelSpec
    template: SequenceTemplate
    pad_to_multiple_of: int = 1  # a pass's length is rounded up to this (`pass_length`)

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Content token ids per text, without special tokens (the template adds them)."""

    @abstractmethod
    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """Pooled, not yet normalised vectors (n, native_dimensions) for full sequences."""

    @abstractmethod
    def describe(self) -> BackendDescription:
        """What runs the model (fixed once loaded)."""

    def health(self) -> BackendHealth:
        """The runtime's state now; cheap, called on every request and scrape."""
        return BackendHealth()

    def pass_length(self, longest: int) -> int:
        """The length `forward` pads a pass whose longest sequence is `longest` to; the
        scheduler plans and meters passes with it."""
        return padded_length(longest, self.pad_to_multiple_of)

    def postprocess(self, pooled: FloatArray, dimensions: int | None) -> FloatArray:
        """Matryoshka slice and normalisation, as the model's rules say."""
        return finalize(pooled, dimensions, self.spec.normalize)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (weights, threads, processes); the default has none."""


class PairBackend(ABC):
    """A loaded reranker: (query, document) pairs into sequences, and a pass that scores
    them. The rerank engine's seam, as `Backend` is the embedding engine's; the runtimes
    live in `backends/` beside the embedding ones."""

    spec: RerankSpec
    max_tokens: int  # the longest sequence a pair becomes (longer pairs are cut to it)

    @abstractmethod
    def sequences(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> list[list[int]]:
        """One full sequence per document, cut to `max_tokens` as the model's authors do."""

    @abstractmethod
    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """Scores (n, 1) in [0, 1] for full sequences."""

    @abstractmethod
    def describe(self) -> BackendDescription:
        """What runs the model (fixed once loaded)."""

    def health(self) -> BackendHealth:
        return BackendHealth()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default has none."""
