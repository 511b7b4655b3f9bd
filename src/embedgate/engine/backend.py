"""The model boundary: tokenise, forward, post-process.

The engine core only talks to this interface. `TorchBackend` is the real implementation;
`FakeBackend` is a deterministic stand-in for tests of everything around the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from embedgate.engine.batching import padded_length
from embedgate.engine.model_spec import ModelSpec
from embedgate.engine.pooling import FloatArray, finalize
from embedgate.engine.sequences import SequenceTemplate
from embedgate.engine.upstream import UpstreamStats
from embedgate.errors import ServiceError


@dataclass(frozen=True)
class WeightOptions:
    """How a PyTorch backend loads its weights, in this process or in a model process."""

    dtype: str = "float32"
    device: str = "auto"
    onednn: bool = True  # on a CPU, pack Linear weights for oneDNN (`onednn.py`)


@dataclass(frozen=True)
class TextOptions:
    """How a backend's tokenizer side turns inputs into forward passes."""

    max_input_tokens: int | None = None  # lower than the model's own limit, or None
    pad_to_multiple_of: int = 16  # a pass's length, rounded up (see `batching.py`)


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


class Backend(ABC):
    """A loaded model: its facts, its tokenizer and its forward pass."""

    spec: ModelSpec
    template: SequenceTemplate
    dtype_name: str = "float32"
    device_name: str = "cpu"
    pad_to_multiple_of: int = 1  # a pass's length is rounded up to this (`pass_length`)

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Content token ids per text, without special tokens (the template adds them)."""

    @abstractmethod
    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """Pooled, not yet normalised vectors (n, native_dimensions) for full sequences."""

    def pass_length(self, longest: int) -> int:
        """The length `forward` pads a pass whose longest sequence is `longest` to; the
        scheduler plans and meters passes with it."""
        return padded_length(longest, self.pad_to_multiple_of)

    def postprocess(self, pooled: FloatArray, dimensions: int | None) -> FloatArray:
        """Matryoshka slice and normalisation, as the model's rules say."""
        return finalize(pooled, dimensions, self.spec.normalize)

    @property
    def unavailable(self) -> str | None:
        """Why no forward pass can run right now (its process is restarting or cannot be
        restarted), or None; readiness reports it so a load balancer can route around."""
        return None

    @property
    def restarts(self) -> int:
        """Times the model's process died and was replaced (0 where it has none)."""
        return 0

    @property
    def restart_failures(self) -> int:
        """Attempts to start a replacement that failed (each is retried after a backoff)."""
        return 0

    @property
    def gave_up(self) -> str | None:
        """Why restarts stopped for good (`model_restart_failures_before_exit`), or None."""
        return None

    def expected_ready_in(self) -> float:
        """Seconds until a pass can run again, as best known (0 when it can now)."""
        return 0.0

    def upstreams(self) -> list[UpstreamStats]:
        """Gateway mode's upstreams and their counters; none for a local model."""
        return []

    @property
    def model_pid(self) -> int | None:
        """The model's own process (its memory is not the server's), or None."""
        return None

    @property
    def fingerprint(self) -> str | None:
        """What names the served model's vectors beyond its name (gateway mode: a hash of
        the probe text's vector), or None."""
        return None

    @property
    def quantization(self) -> str | None:
        """A quantised file's type (GGUF: Q4_K_M, Q8_0, F16...), or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (weights, threads); the default has none."""
