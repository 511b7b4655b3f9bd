"""Startup self-test: proves the loaded model gives sane, batch-invariant vectors.

It runs through the real pipeline (tokeniser, scheduler, backend) before /ready turns green,
so a broken checkpoint, a wrong pooling rule or a padding bug keeps the server not-ready
instead of serving silently wrong vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedgate.engine.engine import EmbeddingEngine, EmbedRequest

PROBE_TEXT = "embedgate self-test: the quick brown fox"
PADDING_TEXTS = (
    "a much longer passage that forces the probe text to be padded inside the batch, "
    "written so that it has several times as many tokens as the probe itself does",
    "短句。",
)
# bf16 changes rounding with the padded shape; fp32 must agree much more tightly
MIN_COSINE = {"float32": 0.99999, "bfloat16": 0.999}


@dataclass(frozen=True)
class SelfTestResult:
    ok: bool
    reason: str


def run_self_test(engine: EmbeddingEngine) -> SelfTestResult:
    """Embed fixed inputs and check finite values, unit norm and batch invariance."""
    try:
        alone = engine.embed_sync(EmbedRequest([PROBE_TEXT])).vectors[0]
        batch = engine.embed_sync(EmbedRequest([PADDING_TEXTS[0], PROBE_TEXT, PADDING_TEXTS[1]]))
    except Exception as exc:
        return SelfTestResult(False, f"embedding the probe failed: {exc}")
    vectors = batch.vectors
    if not (np.isfinite(alone).all() and np.isfinite(vectors).all()):
        return SelfTestResult(False, "the model produced non-finite values")
    if engine.spec.normalize:
        norms = np.linalg.norm(vectors, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            return SelfTestResult(False, f"vectors are not unit length (norms {norms.tolist()})")
    cosine = float(np.dot(alone, vectors[1]) / (np.linalg.norm(alone) * np.linalg.norm(vectors[1])))
    needed = MIN_COSINE.get(engine.describe().dtype, 0.999)
    if cosine < needed:
        return SelfTestResult(
            False,
            f"a text alone and inside a padded batch differ (cosine {cosine:.6f} < {needed}); "
            "padding or pooling is broken for this model",
        )
    return SelfTestResult(True, f"ok (batch cosine {cosine:.6f})")
