"""The VectorStore contract on real Milvus Lite, embedded and as a server over HTTP, and the
weighted reciprocal rank fusion."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from embedgate.knowledge.naming import generation_of, legacy_store_name, store_name_for
from embedgate.knowledge.vector_store import (
    ChunkRow,
    FusionWeights,
    Hit,
    MilvusVectorStore,
    fuse,
)

TEXTS = [
    "机器学习是人工智能的一个分支",
    "今天天气很好，我们去公园。",
    "the quick brown fox jumps",
    "深度学习和机器学习的区别",
]


@pytest.fixture
def store(milvus_uri: str) -> Iterator[MilvusVectorStore]:
    milvus = MilvusVectorStore(milvus_uri)
    yield milvus
    milvus.close()


def rows(doc: str, vectors: np.ndarray) -> list[ChunkRow]:
    return [
        ChunkRow(
            id=f"{doc}:{i}",
            document_id=doc,
            chunk_index=i,
            text=t,
            page=i + 1,
            page_end=i + 2,
            start=i * 100,
            end=i * 100 + len(t),
            headings=("员工手册", f"第{i}章"),
            vector=vectors[i].tolist(),
        )
        for i, t in enumerate(TEXTS)
    ]


def test_contract(store: MilvusVectorStore) -> None:
    vectors = np.eye(4, 8, dtype=np.float32)
    store.ensure_collection("c", 8)
    store.ensure_collection("c", 8)  # idempotent
    store.upsert("c", rows("d1", vectors))
    store.flush("c")
    assert store.count_document("c", "d1") == 4
    top = store.dense("c", vectors[2].tolist(), 2)
    assert top[0].id == "d1:2" and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert (top[0].page, top[0].page_end, top[0].start, top[0].end) == (3, 4, 200, 225)
    assert top[0].headings == ("员工手册", "第2章")
    assert store.dense("c", vectors[2].tolist(), 2, exclude_document="d1") == []
    lexical = store.lexical("c", "机器学习", 2)
    assert {h.id for h in lexical} == {"d1:0", "d1:3"}
    hybrid = store.hybrid("c", vectors[3].tolist(), "机器学习", 3)
    assert hybrid[0].id == "d1:3"  # first in both rankings
    assert [
        len(r) for r in store.dense_many("c", [vectors[0].tolist(), vectors[1].tolist()], 1)
    ] == [1, 1]
    back = [row for page in store.chunks("c", batch=3) for row in page]
    assert sorted(r.id for r in back) == ["d1:0", "d1:1", "d1:2", "d1:3"]
    assert next(r for r in back if r.id == "d1:1").vector == pytest.approx(vectors[1].tolist())
    store.delete_document("c", "d1")
    assert store.count_document("c", "d1") == 0
    store.drop_collection("c")


def test_lexical_ignores_punctuation_and_stop_words(store: MilvusVectorStore) -> None:
    """Before 0.5 Milvus's analyzer indexed '，' and '的' as words, so a query of only
    punctuation and stop words matched every chunk that had them."""
    store.ensure_collection("c", 8)
    store.upsert("c", rows("d1", np.eye(4, 8, dtype=np.float32)))
    assert store.lexical("c", "，的。", 5) == []
    assert store.lexical("c", "the", 5) == []
    assert [h.id for h in store.lexical("c", "公园！", 5)] == ["d1:1"]


def test_fusion_ranks_by_reciprocal_rank_and_keeps_both_scores() -> None:
    def hit(i: str, score: float) -> Hit:
        return Hit(i, "d", 0, i, 1, score)

    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)]
    lexical = [hit("c", 12.0), hit("a", 3.0)]
    fused = fuse(dense, lexical, top_k=3, k=60)
    assert [h.id for h in fused] == ["a", "c", "b"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert (fused[0].dense_score, fused[0].lexical_score) == (0.9, 3.0)
    assert (fused[2].dense_score, fused[2].lexical_score) == (0.8, None)
    # weighted: lexical counts five times as much, so its first hit leads
    leaning = fuse(dense, lexical, top_k=3, weights=FusionWeights(dense=0.2, lexical=1.0))
    assert [h.id for h in leaning][:2] == ["c", "a"]
    assert leaning[0].score == pytest.approx(0.2 / 63 + 1 / 61)


def test_store_names_are_safe_distinct_and_numbered() -> None:
    assert legacy_store_name("hr-docs") != legacy_store_name("hr_docs")
    assert all(ch.isalnum() or ch == "_" for ch in legacy_store_name("weird name/../x"))
    assert generation_of(store_name_for("hr-docs", 7)) == 7
    assert generation_of(None) == 0 and generation_of(legacy_store_name("x")) == 0


def test_the_approximate_indexes_get_their_search_breadth(tmp_path: object) -> None:
    """`nprobe` (IVF) and `ef` (HNSW / AUTOINDEX, at least the hits asked for) go where Milvus
    reads them, in the search's `params`, and Milvus accepts them. (Milvus Lite 2.5.1 does not
    honour them: at 120k rows IVF_FLAT's recall@10 was 0.33 for every nprobe from 1 to 128,
    docs/benchmarks.md; a Milvus server does. FLAT, the default, is exact and takes none.)"""
    from pathlib import Path

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 3000, 10)] + 0.3 * rng.standard_normal((10, 32))
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    milvus = MilvusVectorStore(
        str(Path(str(tmp_path)) / "ivf.db"), dense_index="IVF_FLAT", nprobe=7
    )
    try:
        assert milvus.dense_search_params(10) == {"metric_type": "IP", "params": {"nprobe": 7}}
        milvus.ensure_collection("ivf", 32)
        batch = [
            ChunkRow(f"d:{i}", "d", i, "x", 1, 1, 0, 1, (), vectors[i].tolist())
            for i in range(3000)
        ]
        milvus.upsert("ivf", batch)
        milvus.flush("ivf")
        for query, want in zip(queries, exact, strict=True):
            hits = milvus.dense("ivf", query.tolist(), 10)
            assert {int(h.id.split(":")[1]) for h in hits} == set(want.tolist())
    finally:
        milvus.close()
    milvus.dense_index = "HNSW"
    assert milvus.dense_search_params(500) == {"metric_type": "IP", "params": {"ef": 500}}
    assert milvus.dense_search_params(10)["params"] == {"ef": 128}
    milvus.dense_index = "FLAT"
    assert milvus.dense_search_params(10) == {"metric_type": "IP", "params": {}}
