"""The small-pass runtime: short passes of an encoder model on ONNX Runtime, in the server.

An eager PyTorch forward of one 10-token query costs ~5-8 ms on a CPU, almost all of it
per-operator overhead (the math is ~0.2 GFLOP), plus the hop to the model process. ONNX
Runtime runs the same graph, fused, in ~2 ms on all cores, in this process. So a pass of at
most `max_tokens` padded tokens (one query, a few short texts: what a person waits for) that
finds no other pass running goes here, at once, on every core. Everything else stays on the
PyTorch backend and its thread plan: bigger passes (faster per token there: oneDNN, bf16
where the CPU has it), and small passes while another pass runs, which is what many
concurrent clients make (measured: sending those here too took a fifth off their
throughput, `benchmarks/concurrency.py`).

The graph is exported from the served weights (`backends/torch/onnx_export.py`) and read
from the data dir's cache; it returns the pooled rows `TorchModel` returns, so everything
after the pass (Matryoshka slicing, normalisation) is shared. fp32: parity with the eager
forward is tested to 1e-5.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedgate.engine.backend import Backend, BackendDescription, BackendHealth
from embedgate.engine.backends.hf_tokenizer import IdArray, TokenizedBackend
from embedgate.engine.pooling import FloatArray

SMALL_PASS_TOKENS = 256  # rows x padded length; a pass above this goes to the main backend


class OnnxEncoder:
    """One ONNX Runtime session over the exported encoder, all cores on each run."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        # idle worker threads sleep instead of spinning: spinning takes the cores the
        # event loop and the PyTorch model process need between passes
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """Pooled, not yet normalised float32 rows for a collated batch."""
        (pooled,) = self.session.run(["pooled"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(pooled, dtype=np.float32)


class SmallPassBackend(Backend):
    """`inner` for everything, except that passes of at most `max_tokens` padded tokens run
    on `encoder`."""

    def __init__(
        self, inner: TokenizedBackend, encoder: OnnxEncoder, *, max_tokens: int = SMALL_PASS_TOKENS
    ) -> None:
        self.inner = inner
        self.encoder = encoder
        self.max_tokens = max_tokens
        self.spec = inner.spec
        self.template = inner.template
        self.pad_to_multiple_of = inner.pad_to_multiple_of
        self._running = 0  # passes in progress, on either runtime
        self._lock = threading.Lock()
        self.small_passes = 0  # passes run here (for tests and logs)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.inner.tokenize(texts)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        longest = max(len(s) for s in sequences)
        small = len(sequences) * self.inner.pass_length(longest) <= self.max_tokens
        with self._lock:
            self._running += 1
            alone = self._running == 1
            if small and alone:
                self.small_passes += 1
        try:
            if small and alone:
                return self.encoder.forward(*self._collate(sequences, longest))
            return self.inner.forward(sequences)
        finally:
            with self._lock:
                self._running -= 1

    def _collate(self, sequences: Sequence[Sequence[int]], longest: int) -> tuple[IdArray, IdArray]:
        """Padded to the longest sequence only: the graph takes any length, and a 9-token
        query padded to 16 would cost nearly twice the work."""
        return self.inner.tokenizer.collate_to(sequences, longest)

    def pass_length(self, longest: int) -> int:
        return self.inner.pass_length(longest)

    def postprocess(self, pooled: FloatArray, dimensions: int | None) -> FloatArray:
        return self.inner.postprocess(pooled, dimensions)

    def describe(self) -> BackendDescription:
        described = self.inner.describe()
        return dataclasses.replace(described, runtime=f"{described.runtime}+onnx-small-passes")

    def health(self) -> BackendHealth:
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()
