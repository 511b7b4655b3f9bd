"""The bundled all-MiniLM-L6-v2 against sentence-transformers itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.backend import TextOptions
from embedgate.engine.backends.hf_tokenizer import HFTokenizer
from support.engines import start_engine

SENTENCES = [
    "A man is eating food.",
    "A man is riding a horse on a sunny beach while the crowd watches and cheers loudly.",
    "Das ist ein deutscher Satz.",
    "今天天气很好。",
    "embedding " * 60,
    "x",
]


def test_matches_sentence_transformers(minilm_engine: EmbeddingEngine, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        SENTENCES, normalize_embeddings=True, convert_to_numpy=True
    )
    ours = minilm_engine.embed_sync(EmbedRequest(SENTENCES)).vectors
    assert ours.shape == (len(SENTENCES), 384)
    assert np.abs(ours - reference).max() <= 1e-5
    single = minilm_engine.embed_sync(EmbedRequest([SENTENCES[1]])).vectors[0]
    assert np.abs(single - reference[1]).max() <= 1e-5


def test_padding_stops_at_the_position_table(minilm_dir: Path) -> None:
    """A pad multiple above the model's 512 positions pads to 512, not past the table."""
    tokenizer = HFTokenizer.load(minilm_dir, TextOptions(pad_to_multiple_of=1000))
    ids, mask = tokenizer.collate([[101, 7592, 102]])
    assert ids.shape == (1, 512) and mask.sum() == 3
    engine = start_engine(None, pad_to_multiple_of=1000, model_process=False)
    try:
        ours = engine.embed_sync(EmbedRequest(SENTENCES)).vectors
        reference = start_engine(None, pad_to_multiple_of=1, model_process=False)
        try:
            exact = reference.embed_sync(EmbedRequest(SENTENCES)).vectors
        finally:
            reference.stop()
        assert np.abs(ours - exact).max() <= 1e-5
    finally:
        engine.stop()


def test_spec_from_sentence_transformers_config(minilm_engine: EmbeddingEngine) -> None:
    spec = minilm_engine.spec
    assert (spec.pooling, spec.normalize, spec.padding_side) == ("mean", True, "right")
    assert spec.min_dimensions == spec.native_dimensions == 384
    assert minilm_engine.max_input_tokens == 512


def test_bfloat16_cosine_to_float32(minilm_engine: EmbeddingEngine) -> None:
    engine = start_engine(None, dtype="bfloat16")
    try:
        low = engine.embed_sync(EmbedRequest(SENTENCES)).vectors
        high = minilm_engine.embed_sync(EmbedRequest(SENTENCES)).vectors
        assert (low * high).sum(axis=1).min() >= 0.999
    finally:
        engine.stop()
