"""The rerank engine end to end on tiny real models: the same scores as the authors' code
through the queue, the model process and batching; order kept; bad requests refused."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.engine import EngineConfig, RerankEngine, RerankRequest, load_reranker
from embedgate.errors import ErrorKind, ServiceError
from support.rerankers import QUERY, reference_cross_encoder_scores, reference_qwen3_scores
from support.servers import wait_until

DOCUMENTS = [
    "Employees get fifteen days of annual leave per year.",
    "The VPN must be used for every connection to the internal network.",
    "年假为每年十五天，病假另计。",
    "Sick leave is ten days.",
    "Annual leave: fifteen days. " * 12,
]


@pytest.fixture(scope="module")
def qwen3(qwen3_reranker_dir: Path) -> Iterator[RerankEngine]:
    engine = load_reranker(EngineConfig(model=str(qwen3_reranker_dir), forward_threads=1))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def cross(cross_encoder_dir: Path) -> Iterator[RerankEngine]:
    engine = load_reranker(EngineConfig(model=str(cross_encoder_dir)))
    engine.start()
    yield engine
    engine.stop()


def test_qwen3_scores_through_the_engine_match_the_model_card(
    qwen3: RerankEngine, qwen3_reranker_dir: Path
) -> None:
    assert qwen3.describe().runtime == "torch-process"  # the CPU default: a model process
    result = qwen3.rerank_sync(RerankRequest(query=QUERY, documents=DOCUMENTS))
    want = reference_qwen3_scores(
        qwen3_reranker_dir, [(QUERY, d) for d in DOCUMENTS], None, qwen3.max_input_tokens
    )
    assert np.abs(result.scores - np.array(want)).max() <= 1e-5
    assert result.tokens == sum(
        len(s) for s in qwen3.sequences(RerankRequest(query=QUERY, documents=DOCUMENTS))
    )


def test_cross_encoder_scores_through_the_engine_match_sentence_transformers(
    cross: RerankEngine, cross_encoder_dir: Path
) -> None:
    result = cross.rerank_sync(RerankRequest(query=QUERY, documents=DOCUMENTS))
    want = reference_cross_encoder_scores(cross_encoder_dir, [(QUERY, d) for d in DOCUMENTS])
    assert np.abs(result.scores - np.array(want)).max() <= 1e-5


def test_many_documents_keep_their_order_across_passes(cross: RerankEngine) -> None:
    """300 documents of mixed lengths are split into several passes and sorted by length
    inside the queue; every score still lands on its own document."""
    documents = [f"document {i}: " + "leave policy " * (i % 40) for i in range(300)]
    together = cross.rerank_sync(RerankRequest(query=QUERY, documents=documents)).scores
    alone = [
        cross.rerank_sync(RerankRequest(query=QUERY, documents=[d])).scores[0]
        for d in documents[::37]
    ]
    assert np.abs(together[::37] - np.array(alone)).max() <= 1e-5


@pytest.mark.anyio
async def test_concurrent_callers_get_their_own_scores(cross: RerankEngine) -> None:
    queries = [f"question {i} about annual leave" for i in range(12)]
    results = await asyncio.gather(
        *(cross.rerank(RerankRequest(query=q, documents=DOCUMENTS, caller=q)) for q in queries)
    )
    for query, result in zip(queries, results, strict=True):
        expected = cross.rerank_sync(RerankRequest(query=query, documents=DOCUMENTS)).scores
        assert np.abs(result.scores - expected).max() <= 1e-5


def test_bad_requests_are_refused_before_any_work(cross: RerankEngine, qwen3: RerankEngine) -> None:
    with pytest.raises(ServiceError) as empty:
        cross.rerank_sync(RerankRequest(query=QUERY, documents=[]))
    assert empty.value.kind is ErrorKind.INVALID_INPUT and empty.value.param == "documents"
    with pytest.raises(ServiceError) as instructed:
        cross.rerank_sync(RerankRequest(query=QUERY, documents=["x"], instruction="Judge"))
    assert instructed.value.kind is ErrorKind.INVALID_REQUEST
    assert instructed.value.param == "instruction"
    many = ["x"] * (cross.limits.max_inputs + 1)
    with pytest.raises(ServiceError) as too_many:
        cross.rerank_sync(RerankRequest(query=QUERY, documents=many))
    assert too_many.value.kind is ErrorKind.TOO_MANY_INPUTS
    # Qwen3 takes an instruction, and it changes the score
    plain = qwen3.rerank_sync(RerankRequest(query=QUERY, documents=DOCUMENTS[:1])).scores[0]
    told = qwen3.rerank_sync(
        RerankRequest(query=QUERY, documents=DOCUMENTS[:1], instruction="Find leave rules")
    ).scores[0]
    assert plain != told


def test_an_embedding_model_is_not_loaded_as_a_reranker(tiny_qwen3_dir: Path) -> None:
    with pytest.raises(ValueError, match="not a reranker"):
        load_reranker(EngineConfig(model=str(tiny_qwen3_dir)))


def test_a_killed_reranker_process_is_replaced(cross_encoder_dir: Path) -> None:
    engine = load_reranker(EngineConfig(model=str(cross_encoder_dir), forward_threads=1))
    engine.start()
    try:
        before = engine.rerank_sync(RerankRequest(query=QUERY, documents=DOCUMENTS)).scores
        pid = engine.health().model_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: engine.health().restarts == 1, 60)
        after = engine.rerank_sync(RerankRequest(query=QUERY, documents=DOCUMENTS)).scores
        assert np.array_equal(before, after)
        assert engine.health().model_pid not in (None, pid)
    finally:
        engine.stop()


def test_a_pair_reads_back_as_its_query_and_document_texts(
    qwen3_reranker_dir: Path, cross_encoder_dir: Path
) -> None:
    """What a gateway reranker sends its upstream: the texts each sequence holds. Byte-level
    BPE (Qwen) gives them back exactly; an uncased WordPiece vocabulary gives them back
    lower-cased, which it tokenises to the same ids."""
    from embedgate.engine.backends.pair_tokenizer import PairTokenizer
    from embedgate.engine.rerank_spec import read_rerank_spec

    query = "How many days of annual leave?"
    for directory in (qwen3_reranker_dir, cross_encoder_dir):
        spec = read_rerank_spec(directory)
        assert spec is not None
        tokenizer = PairTokenizer.load(directory, spec)
        sequences = tokenizer.sequences(query, DOCUMENTS[:4])
        for document, sequence in zip(DOCUMENTS[:4], sequences, strict=True):
            got_query, got_document = tokenizer.pair_text(sequence)
            if spec.kind == "qwen3":
                assert (got_query, got_document) == (query, document)
            else:
                again = tokenizer.sequences(got_query, [got_document])[0]
                assert again == list(sequence)
    long = tokenizer.sequences(query, ["leave " * 2000])[0]
    assert len(long) == tokenizer.max_tokens  # cut as the model card says
    assert tokenizer.pair_text(long)[1].startswith("leave leave")
