"""Reranker scores against their authors' code: Qwen3-Reranker's model-card recipe run with
transformers, and sentence-transformers' CrossEncoder.predict, on tiny random models with real
vocabularies (the real Qwen vocabulary, the bundled MiniLM's BERT vocabulary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedgate.engine.backend import WeightOptions
from embedgate.engine.backends.pair_tokenizer import PairTokenizer
from embedgate.engine.backends.tokenizer_files import read_tokenizer_files
from embedgate.engine.backends.torch.reranker import TorchReranker
from embedgate.engine.rerank_spec import QWEN3_RERANK_SUFFIX, RerankSpec, read_rerank_spec
from support.rerankers import INSTRUCTION, QUERY, reference_qwen3_scores

DOCUMENTS = [
    "Employees get fifteen days of annual leave per year.",
    "The VPN must be used for every connection to the internal network.",
    "年假为每年十五天，病假另计。",
    "x",
    "Annual leave: fifteen days. " * 12,
]


def ours(model_dir: Path, spec: RerankSpec, instruction: str | None = None) -> np.ndarray:
    tokenizer = PairTokenizer.load(model_dir, spec)
    yes_no = tokenizer.yes_no() if spec.kind == "qwen3" else None
    model = TorchReranker.load(
        model_dir, spec, WeightOptions(), yes_no=yes_no, separator=tokenizer.separator
    )
    try:
        return model.forward(*tokenizer.collate(tokenizer.sequences(QUERY, DOCUMENTS, instruction)))
    finally:
        model.close()


def test_the_kind_is_read_from_the_directory(
    qwen3_reranker_dir: Path, cross_encoder_dir: Path, tiny_qwen3_dir: Path, minilm_dir: Path
) -> None:
    qwen = read_rerank_spec(qwen3_reranker_dir)
    assert qwen is not None and (qwen.kind, qwen.padding_side) == ("qwen3", "left")
    cross = read_rerank_spec(cross_encoder_dir)
    assert cross is not None and (cross.kind, cross.labels, cross.token_types) == (
        "cross-encoder",
        1,
        True,
    )
    # the embedding models are not rerankers, though Qwen3's config names the same class
    assert read_rerank_spec(tiny_qwen3_dir) is None
    assert read_rerank_spec(minilm_dir) is None
    # a Qwen3 reranker's name says what its config cannot
    assert read_rerank_spec(tiny_qwen3_dir, name="Qwen/Qwen3-Reranker-0.6B") is not None
    # or the operator's task = rerank
    assert read_rerank_spec(tiny_qwen3_dir, told=True) is not None


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_qwen3_reranker_matches_the_model_card(
    qwen3_reranker_dir: Path, instruction: str | None
) -> None:
    spec = read_rerank_spec(qwen3_reranker_dir)
    assert spec is not None
    got = ours(qwen3_reranker_dir, spec, instruction)
    pairs = [(QUERY, d) for d in DOCUMENTS]
    want = reference_qwen3_scores(qwen3_reranker_dir, pairs, instruction, spec.max_tokens)
    assert got.shape == (len(DOCUMENTS),)
    assert np.abs(got - np.array(want)).max() <= 1e-5
    assert ((got > 0) & (got < 1)).all() and got.std() > 1e-3  # real, different scores


def test_qwen3_reranker_truncates_the_pair_text_as_the_model_card_does(
    qwen3_reranker_dir: Path,
) -> None:
    spec = read_rerank_spec(qwen3_reranker_dir)
    assert spec is not None
    tokenizer = PairTokenizer.load(qwen3_reranker_dir, spec)
    long_document = "The annual leave policy has many clauses. " * 400
    [sequence] = tokenizer.sequences(QUERY, [long_document])
    assert len(sequence) == spec.max_tokens == 512  # the tiny model's position table
    suffix = read_tokenizer_files(qwen3_reranker_dir).tokenizer.encode(
        QWEN3_RERANK_SUFFIX, add_special_tokens=False
    )
    assert sequence[-len(suffix.ids) :] == suffix.ids  # cut in the document, the suffix whole
    model = TorchReranker.load(qwen3_reranker_dir, spec, WeightOptions(), yes_no=tokenizer.yes_no())
    try:
        got = model.forward(*tokenizer.collate([sequence]))
    finally:
        model.close()
    want = reference_qwen3_scores(qwen3_reranker_dir, [(QUERY, long_document)], None, 512)
    assert abs(float(got[0]) - want[0]) <= 1e-5


def test_cross_encoder_matches_sentence_transformers(cross_encoder_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    spec = read_rerank_spec(cross_encoder_dir)
    assert spec is not None
    got = ours(cross_encoder_dir, spec)
    want = CrossEncoder(str(cross_encoder_dir), device="cpu").predict(
        [(QUERY, d) for d in DOCUMENTS]
    )
    assert got.shape == (len(DOCUMENTS),)
    assert np.abs(got - np.asarray(want, dtype=np.float32)).max() <= 1e-5
    assert got.std() > 1e-3


def test_cross_encoder_truncates_longest_first(cross_encoder_dir: Path) -> None:
    """A pair over the limit is cut from its longer side, as transformers' pair encoding
    with truncation does, and still scores as CrossEncoder scores it."""
    from sentence_transformers import CrossEncoder

    spec = read_rerank_spec(cross_encoder_dir)
    assert spec is not None
    tokenizer = PairTokenizer.load(cross_encoder_dir, spec)
    long_document = "annual leave policy clause " * 300
    [sequence] = tokenizer.sequences(QUERY, [long_document])
    assert len(sequence) == 512
    query_ids = tokenizer.sequences(QUERY, ["x"])[0]
    assert sequence[: len(query_ids) - 2] == query_ids[:-2]  # the short query is kept whole
    model = TorchReranker.load(
        cross_encoder_dir, spec, WeightOptions(), separator=tokenizer.separator
    )
    try:
        got = model.forward(*tokenizer.collate([sequence]))
    finally:
        model.close()
    want = CrossEncoder(str(cross_encoder_dir), device="cpu").predict([(QUERY, long_document)])
    assert abs(float(got[0]) - float(want[0])) <= 1e-5


def test_segments_follow_the_pair_encoding(cross_encoder_dir: Path) -> None:
    """The model side marks segment B as the tokenizer's pair encoding does."""
    import torch

    from embedgate.engine.backends.torch.reranker import segment_b

    spec = read_rerank_spec(cross_encoder_dir)
    assert spec is not None
    tokenizer = PairTokenizer.load(cross_encoder_dir, spec)
    assert tokenizer.separator is not None
    ids, mask = tokenizer.collate(tokenizer.sequences(QUERY, DOCUMENTS))
    types = segment_b(torch.from_numpy(ids), torch.from_numpy(mask), tokenizer.separator)
    pairs = read_tokenizer_files(cross_encoder_dir).tokenizer
    for row, document in enumerate(DOCUMENTS[:4]):
        encoding = pairs.encode(QUERY, document)
        assert types[row, : len(encoding.ids)].tolist() == encoding.type_ids
        assert not types[row, len(encoding.ids) :].any()  # padding is segment A
