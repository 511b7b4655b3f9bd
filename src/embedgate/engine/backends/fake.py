"""A deterministic, dependency-free backend for tests of everything around the model.

Vectors depend only on a sequence's ids (so results are batch-invariant by construction), and
hooks let tests hold a forward pass open, see what reached the model, or make it emit NaN.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence

import numpy as np

from embedgate.engine.backend import Backend, BackendDescription
from embedgate.engine.model_spec import QWEN3_DEFAULT_TASK, ModelSpec
from embedgate.engine.pooling import FloatArray
from embedgate.engine.sequences import SequenceTemplate

FAKE_EOS = 1
FAKE_VOCAB = 30_000


def fake_spec(dimensions: int = 64, max_tokens: int = 512, matryoshka: bool = True) -> ModelSpec:
    """A Qwen3-like spec: last-token pooling, normalised, Matryoshka when asked."""
    return ModelSpec(
        family="qwen3",
        native_dimensions=dimensions,
        max_tokens=max_tokens,
        pooling="last",
        normalize=True,
        padding_side="left",
        min_dimensions=min(32, dimensions) if matryoshka else dimensions,
        default_task=QWEN3_DEFAULT_TASK,
    )


class FakeBackend(Backend):
    """Words become ids by CRC32; a sequence's vector is seeded by its ids."""

    def __init__(self, spec: ModelSpec | None = None, poison_token: int | None = None) -> None:
        self.spec = spec or fake_spec()
        self.template = SequenceTemplate.for_model(
            (), (FAKE_EOS,), FAKE_VOCAB, self.spec.max_tokens, FAKE_EOS
        )
        self.poison_token = poison_token
        self.gate: threading.Event | None = None
        self.delay = 0.0
        self.entered = threading.Event()
        self.seen: list[list[int]] = []
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def describe(self) -> BackendDescription:
        return BackendDescription(runtime="fake", dtype="float32", device="cpu")

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode("utf-8")) % (FAKE_VOCAB - 2)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [[self.word_id(word) for word in text.split()] or [2] for text in texts]

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.seen.extend(list(s) for s in sequences)
            self.batches.append(len(sequences))
        rows = []
        for seq in sequences:
            seed = zlib.crc32(np.asarray(seq, dtype=np.int64).tobytes())
            row = np.random.default_rng(seed).standard_normal(self.spec.native_dimensions)
            if self.poison_token is not None and self.poison_token in seq:
                row[0] = np.nan
            rows.append(row)
        return np.asarray(rows, dtype=np.float32)
