"""Gateway mode: the model runs elsewhere (vLLM, SGLang, TEI, another embedgate), behind
the same Backend seam as a local model.

Everything above the backend is unchanged: requests are validated, authorised, rate
limited, audited, tokenised with the model's own tokenizer (so token limits refuse early and
`usage` is exact), queued fairly and batched by the engine. Only the forward pass differs:
each sequence's content tokens are decoded back to its text (the Qwen and other byte-level
BPE tokenizers round-trip exactly) and the batch goes to the upstream pool
(`upstream.py`), which spreads it over the healthy upstreams and checks what comes back.
The model family's rules stay here: the engine applies the Qwen3 query instruction before
tokenising and the Matryoshka slice after, so an upstream that ignores them (vLLM and
SGLang's `/v1/embeddings` do) still yields the right vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedgate.engine.backend import BackendDescription, BackendHealth, TextOptions
from embedgate.engine.backends.gateway.runner import UpstreamRunner
from embedgate.engine.backends.gateway.wire import EmbeddingWire
from embedgate.engine.backends.hf_tokenizer import HFTokenizer, TokenizedBackend
from embedgate.engine.config import UpstreamConfig
from embedgate.engine.pooling import FloatArray, finalize


class GatewayBackend(TokenizedBackend):
    def __init__(
        self,
        tokenizer: HFTokenizer,
        upstreams: Sequence[UpstreamConfig],
        *,
        deadline_s: float = 60.0,
        health_interval_s: float = 5.0,
    ) -> None:
        super().__init__(
            tokenizer, BackendDescription(runtime="gateway", dtype="upstream", device="upstream")
        )
        self.upstreams = UpstreamRunner(
            upstreams,
            wire=EmbeddingWire(),
            dimensions=self.spec.native_dimensions,
            deadline_s=deadline_s,
            health_interval_s=health_interval_s,
        )
        self.pool = self.upstreams.pool

    @classmethod
    def load(
        cls,
        model_dir: Path,
        text: TextOptions,
        upstreams: Sequence[UpstreamConfig],
        *,
        deadline_s: float = 60.0,
        health_interval_s: float = 5.0,
    ) -> GatewayBackend:
        """The tokenizer and rules of `model_dir` (no weights are read); the upstreams are
        probed once before this returns, so a gateway starts serving a known model."""
        try:
            tokenizer = HFTokenizer.load(model_dir, text)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"gateway mode needs the served model's tokenizer: {model_dir} has no usable "
                "tokenizer.json / config.json (give --model the model's directory; its "
                f"weights are not read) ({str(exc).splitlines()[0]})"
            ) from None
        return cls(tokenizer, upstreams, deadline_s=deadline_s, health_interval_s=health_interval_s)

    # --- the seam ------------------------------------------------------------------------------
    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """The upstreams' unit vectors for the sequences' texts (native dimensions)."""
        prefix, suffix = len(self.template.prefix), len(self.template.suffix)
        texts = [self.tokenizer.decode(s[prefix : len(s) - suffix]) for s in sequences]
        return self.upstreams.call(texts).astype(np.float32, copy=False)

    def postprocess(self, pooled: FloatArray, dimensions: int | None) -> FloatArray:
        """Upstream vectors are unit length already: pass them through bit for bit at the
        native size; slice and renormalise for Matryoshka `dimensions`."""
        if dimensions is None:
            return pooled
        return finalize(pooled, dimensions, True)

    def health(self) -> BackendHealth:
        return self.upstreams.health()

    def describe(self) -> BackendDescription:
        """The fingerprint is what the upstreams answered to the probe text (read when
        asked: it is known once one upstream has passed its first probe)."""
        return dataclasses.replace(self.description, fingerprint=self.pool.fingerprint)

    def close(self) -> None:
        self.upstreams.close()
