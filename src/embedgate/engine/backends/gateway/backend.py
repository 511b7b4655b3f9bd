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

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedgate.engine.backend import (
    BackendDescription,
    BackendHealth,
    InputRefused,
    ModelUnavailable,
    TextOptions,
)
from embedgate.engine.backends.gateway.upstream import UpstreamPool
from embedgate.engine.backends.hf_tokenizer import HFTokenizer, TokenizedBackend
from embedgate.engine.config import UpstreamConfig
from embedgate.engine.pooling import FloatArray, finalize
from embedgate.errors import ErrorKind, ServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)


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
        self.deadline_s = deadline_s  # one pass, retries included; then 503
        self.health_interval_s = health_interval_s  # every upstream is probed this often
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="embedgate-upstreams", daemon=True
        )
        self._thread.start()
        self.pool = self._run(self._open(list(upstreams)))
        self._prober = asyncio.run_coroutine_threadsafe(self._check_forever(), self._loop)

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

    async def _open(self, upstreams: list[UpstreamConfig]) -> UpstreamPool:
        pool = UpstreamPool(
            upstreams,
            dimensions=self.spec.native_dimensions,
            probe_timeout_s=max(1.0, self.health_interval_s),
        )
        await pool.probe_due()
        return pool

    async def _check_forever(self) -> None:
        """Probe every upstream every `health_interval_s`, traffic or not, so readiness
        follows the upstreams within about one interval (plus a probe's timeout)."""
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.pool.check_health()
            except Exception:  # never let one bad round end the checks
                log.exception("upstream health check failed")

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the upstreams' event loop, from any thread, and wait."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # --- the seam ------------------------------------------------------------------------------
    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        """The upstreams' unit vectors for the sequences' texts (native dimensions)."""
        prefix, suffix = len(self.template.prefix), len(self.template.suffix)
        texts = [self.tokenizer.decode(s[prefix : len(s) - suffix]) for s in sequences]
        try:
            vectors = self._run(self.pool.embed(texts, deadline_s=self.deadline_s))
        except ServiceError as exc:
            if exc.kind is ErrorKind.MODEL_UNAVAILABLE:  # no upstream: 503 + Retry-After
                raise ModelUnavailable(exc.message, self.health_interval_s) from None
            raise InputRefused(exc) from None  # an upstream refused an input: find which
        return vectors.astype(np.float32, copy=False)

    def postprocess(self, pooled: FloatArray, dimensions: int | None) -> FloatArray:
        """Upstream vectors are unit length already: pass them through bit for bit at the
        native size; slice and renormalise for Matryoshka `dimensions`."""
        if dimensions is None:
            return pooled
        return finalize(pooled, dimensions, True)

    def health(self) -> BackendHealth:
        return BackendHealth(
            unavailable=None if self.pool.healthy() else self.pool.why_none(),
            ready_in_s=self.health_interval_s,
            upstreams=tuple(self.pool.stats()),
        )

    def describe(self) -> BackendDescription:
        """The fingerprint is what the upstreams answered to the probe text (read when
        asked: it is known once one upstream has passed its first probe)."""
        return dataclasses.replace(self.description, fingerprint=self.pool.fingerprint)

    def close(self) -> None:
        self._prober.cancel()
        self._run(self.pool.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
