"""Tokenisation, EOS and padding with the real Qwen3 vocabulary (known ids from the model card)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import start_engine
from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.process_backend import ProcessBackend
from embedgate.engine.torch_backend import TorchBackend

EOS = 151643


@pytest.fixture(scope="module")
def engine(qwen_vocab_dir: Path) -> Iterator[EmbeddingEngine]:
    e = start_engine(qwen_vocab_dir)
    yield e
    e.stop()


def test_known_ids_and_eos(engine: EmbeddingEngine) -> None:
    assert engine.backend.template.vocab_size == 151669
    assert engine.backend.tokenize(["Hello, world!"]) == [[9707, 11, 1879, 0]]
    assert engine.tokenize(EmbedRequest(["test", "test again"])) == [[1944, EOS], [1944, 1549, EOS]]


def test_left_padding_matches_model_card(engine: EmbeddingEngine) -> None:
    backend = engine.backend
    assert isinstance(backend, TorchBackend | ProcessBackend)
    ids, mask = backend.tokenizer.collate(engine.tokenize(EmbedRequest(["test", "test again"])))
    assert ids.tolist() == [[EOS, 1944, EOS], [1944, 1549, EOS]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_query_prompt_tokens(engine: EmbeddingEngine) -> None:
    [seq] = engine.tokenize(EmbedRequest(["Paris"], input_type="query"))
    text = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:Paris"
    assert seq == [*engine.backend.tokenize([text])[0], EOS]


def test_whitespace_is_kept_as_given(engine: EmbeddingEngine) -> None:
    """Policy: inputs are never stripped; a trailing space is a token and changes the vector."""
    a, b = engine.tokenize(EmbedRequest(["hello", "hello "]))
    assert a != b and len(b) == len(a) + 1
    vectors = engine.embed_sync(EmbedRequest(["hello", "hello "])).vectors
    assert not np.allclose(vectors[0], vectors[1])


def test_truncation_keeps_eos(engine: EmbeddingEngine) -> None:
    long_text = "word " * 2000
    [seq] = engine.tokenize(EmbedRequest([long_text], truncate=True))
    assert len(seq) == engine.max_input_tokens and seq[-1] == EOS
