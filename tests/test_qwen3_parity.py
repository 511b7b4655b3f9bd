"""Qwen3-Embedding rules, checked against the authors' reference recipe written out here
independently of the engine (qwen3-embedding.md, "Reference recipe")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from embedgate.engine import EmbeddingEngine, EmbedRequest
from support.engines import start_engine

TASK = "Given a web search query, retrieve relevant passages that answer the query"
DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "机器学习是人工智能的一个分支。",
    "A much longer passage about embedding models, left padding, last-token pooling and "
    "Matryoshka truncation, so that the shorter inputs in the same batch need padding.",
]
TOL = 1e-5


def reference(path: Path, texts: list[str], dims: int | None = None) -> np.ndarray:
    tok = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=8192, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    emb = out[:, -1]
    d = dims or emb.shape[1]
    return torch.nn.functional.normalize(emb[:, :d], p=2, dim=1).numpy()


def embed(engine: EmbeddingEngine, texts: list[str], **kw: object) -> np.ndarray:
    return engine.embed_sync(EmbedRequest(texts, **kw)).vectors  # type: ignore[arg-type]


def test_single_inputs_match_reference(qwen3_engine: EmbeddingEngine, tiny_qwen3_dir: Path) -> None:
    for text in DOCS:
        ours = embed(qwen3_engine, [text])
        assert np.abs(ours - reference(tiny_qwen3_dir, [text])).max() <= TOL


def test_padded_batch_matches_reference(
    qwen3_engine: EmbeddingEngine, tiny_qwen3_dir: Path
) -> None:
    ours = embed(qwen3_engine, DOCS)
    theirs = reference(tiny_qwen3_dir, DOCS)
    assert np.abs(ours - theirs).max() <= TOL
    # and each row equals the same text embedded alone
    for i, text in enumerate(DOCS):
        assert np.abs(ours[i] - embed(qwen3_engine, [text])[0]).max() <= TOL


@pytest.mark.parametrize("multiple", [1, 64])
def test_padding_multiple_changes_no_vector(tiny_qwen3_dir: Path, multiple: int) -> None:
    """Served passes are padded (left, masked) beyond the longest input; exact-length passes and
    much longer padding (which moves every real token's position) give the reference vectors."""
    # one forward thread, as in the `qwen3_engine` fixture: the batch stays one pass
    engine = start_engine(tiny_qwen3_dir, pad_to_multiple_of=multiple, forward_threads=1)
    try:
        assert np.abs(embed(engine, DOCS) - reference(tiny_qwen3_dir, DOCS)).max() <= TOL
    finally:
        engine.stop()


@pytest.mark.parametrize("task", [None, "Retrieve semantically similar text"])
def test_queries_get_the_exact_instruction(
    qwen3_engine: EmbeddingEngine, tiny_qwen3_dir: Path, task: str | None
) -> None:
    queries = ["what is the capital of France?", "狐狸"]
    formatted = [f"Instruct: {task or TASK}\nQuery:{q}" for q in queries]
    ours = embed(qwen3_engine, queries, input_type="query", instruction=task)
    assert np.abs(ours - reference(tiny_qwen3_dir, formatted)).max() <= TOL
    # documents get no instruction at all
    plain = embed(qwen3_engine, queries, input_type="document")
    assert np.abs(plain - reference(tiny_qwen3_dir, queries)).max() <= TOL
    assert np.abs(plain - ours).max() > 1e-3


def test_instruction_alone_means_query(qwen3_engine: EmbeddingEngine) -> None:
    a = embed(qwen3_engine, ["fox"], instruction=TASK)
    b = embed(qwen3_engine, ["fox"], input_type="query")
    assert np.array_equal(a, b)


@pytest.mark.parametrize("dims", [32, 64])
def test_matryoshka_slices_then_normalises(
    qwen3_engine: EmbeddingEngine, tiny_qwen3_dir: Path, dims: int
) -> None:
    assert qwen3_engine.spec.native_dimensions == 64
    ours = embed(qwen3_engine, DOCS, dimensions=dims)
    assert ours.shape == (len(DOCS), dims)
    assert np.abs(ours - reference(tiny_qwen3_dir, DOCS, dims)).max() <= TOL
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_native_dimensions_is_the_default(qwen3_engine: EmbeddingEngine) -> None:
    assert np.array_equal(embed(qwen3_engine, DOCS), embed(qwen3_engine, DOCS, dimensions=64))


def test_tokenizer_without_eos_postprocessor_gives_same_vectors(
    qwen3_engine: EmbeddingEngine, tiny_qwen3_no_eos_dir: Path
) -> None:
    engine = start_engine(tiny_qwen3_no_eos_dir)
    try:
        bare = engine.tokenize(EmbedRequest(["hello world"]))
        assert bare[0][-1] == engine.backend.template.suffix[-1]
        a = embed(engine, DOCS)
        b = embed(qwen3_engine, DOCS)
        assert np.abs(a - b).max() <= TOL
    finally:
        engine.stop()


def test_token_id_input_equals_text_input(qwen3_engine: EmbeddingEngine) -> None:
    content = qwen3_engine.backend.tokenize(["Paris is the capital of France."])[0]
    from_ids = embed(qwen3_engine, [content])  # type: ignore[list-item]
    with_eos = embed(qwen3_engine, [[*content, qwen3_engine.backend.template.suffix[-1]]])  # type: ignore[list-item]
    from_text = embed(qwen3_engine, ["Paris is the capital of France."])
    assert np.array_equal(from_ids, from_text)
    assert np.array_equal(with_eos, from_text)


def test_bfloat16_stays_close_to_float32(
    tiny_qwen3_dir: Path, qwen3_engine: EmbeddingEngine
) -> None:
    engine = start_engine(tiny_qwen3_dir, dtype="bfloat16")
    try:
        assert engine.describe().dtype == "bfloat16"
        low = embed(engine, DOCS)
        high = embed(qwen3_engine, DOCS)
        cosines = (low * high).sum(axis=1)
        assert cosines.min() >= 0.999
    finally:
        engine.stop()
