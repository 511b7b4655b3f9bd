"""Startup self-test: proves the loaded model gives sane, batch-invariant vectors or scores.

It runs through the real pipeline (tokeniser, scheduler, backend) before /ready turns green,
so a broken checkpoint, a wrong pooling rule or a padding bug keeps the server not-ready
instead of serving silently wrong vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedgate.engine.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.reranking import RerankEngine, RerankRequest

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


RERANK_QUERY = "embedgate self-test: which passage is about the fox?"
# fp32 scores of one pair alone and inside a padded batch agree to float rounding
MAX_SCORE_DRIFT = {"float32": 1e-4, "bfloat16": 2e-2}


def run_rerank_self_test(engine: RerankEngine) -> SelfTestResult:
    """Score fixed pairs and check finite scores in [0, 1] and batch invariance: the probe
    pair alone and padded between longer and shorter ones must score the same."""
    try:
        alone = engine.rerank_sync(RerankRequest(query=RERANK_QUERY, documents=[PROBE_TEXT]))
        batch = engine.rerank_sync(
            RerankRequest(
                query=RERANK_QUERY, documents=[PADDING_TEXTS[0], PROBE_TEXT, PADDING_TEXTS[1]]
            )
        )
    except Exception as exc:
        return SelfTestResult(False, f"scoring the probe failed: {exc}")
    scores = np.concatenate([alone.scores, batch.scores])
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        return SelfTestResult(False, f"scores outside [0, 1]: {scores.tolist()}")
    drift = abs(float(alone.scores[0]) - float(batch.scores[1]))
    allowed = MAX_SCORE_DRIFT.get(engine.describe().dtype, 1e-2)
    if drift > allowed:
        return SelfTestResult(
            False,
            f"a pair alone and inside a padded batch score differently ({drift:.6f} > "
            f"{allowed}); padding is broken for this model",
        )
    return SelfTestResult(True, f"ok (batch drift {drift:.2e})")
