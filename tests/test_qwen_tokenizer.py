"""Tokenisation, EOS and padding with the real Qwen3 vocabulary (known ids from the model card)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.backend import TextOptions
from embedgate.engine.backends.hf_tokenizer import HFTokenizer
from embedgate.engine.backends.torch.backend import TorchBackend
from embedgate.engine.backends.torch.process_backend import ProcessBackend
from support.engines import start_engine

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


def test_left_padding_matches_model_card(engine: EmbeddingEngine, qwen_vocab_dir: Path) -> None:
    backend = engine.backend
    assert isinstance(backend, TorchBackend | ProcessBackend)
    sequences = engine.tokenize(EmbedRequest(["test", "test again"]))
    exact = HFTokenizer.load(qwen_vocab_dir, TextOptions(pad_to_multiple_of=1))
    ids, mask = exact.collate(sequences)
    assert ids.tolist() == [[EOS, 1944, EOS], [1944, 1549, EOS]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    # served passes are padded further, on the same side, to a multiple of 16 (`batching.py`)
    ids, mask = backend.tokenizer.collate(sequences)
    assert ids.shape == mask.shape == (2, 16)
    assert ids[:, -3:].tolist() == [[EOS, 1944, EOS], [1944, 1549, EOS]]
    assert mask[:, -3:].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert (ids[:, :-3] == EOS).all() and not mask[:, :-3].any()


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
