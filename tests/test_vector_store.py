"""The VectorStore contract, run against both the in-memory fake and real Milvus Lite, and RRF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.knowledge.vector_store import (
    ChunkRow,
    Hit,
    MemoryVectorStore,
    MilvusVectorStore,
    VectorStore,
    fuse,
    physical_name,
)

TEXTS = [
    "机器学习是人工智能的一个分支",
    "今天天气很好我们去公园",
    "the quick brown fox jumps",
    "深度学习和机器学习的区别",
]


@pytest.fixture(params=["memory", "milvus"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "memory":
        yield MemoryVectorStore()
        return
    milvus = MilvusVectorStore(str(tmp_path / "m.db"))
    yield milvus
    milvus.close()


def rows(doc: str, vectors: np.ndarray) -> list[ChunkRow]:
    return [
        ChunkRow(f"{doc}:{i}", doc, i, t, 1, 0, len(t), "", vectors[i].tolist())
        for i, t in enumerate(TEXTS)
    ]


def test_contract(store: VectorStore) -> None:
    vectors = np.eye(4, 8, dtype=np.float32)
    store.ensure_collection("c", 8)
    store.ensure_collection("c", 8)  # idempotent
    store.upsert("c", rows("d1", vectors))
    store.flush("c")
    assert store.count_document("c", "d1") == 4
    top = store.dense("c", vectors[2].tolist(), 2)
    assert top[0].id == "d1:2" and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert store.dense("c", vectors[2].tolist(), 2, exclude_document="d1") == []
    lexical = store.lexical("c", "机器学习", 2)
    assert {h.id for h in lexical} == {"d1:0", "d1:3"}
    hybrid = store.hybrid("c", vectors[3].tolist(), "机器学习", 3)
    assert hybrid[0].id == "d1:3"  # first in both rankings
    assert [
        len(r) for r in store.dense_many("c", [vectors[0].tolist(), vectors[1].tolist()], 1)
    ] == [1, 1]
    store.delete_document("c", "d1")
    assert store.count_document("c", "d1") == 0
    store.drop_collection("c")


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


def test_physical_names_are_safe_and_distinct() -> None:
    assert physical_name("hr-docs") != physical_name("hr_docs")
    assert all(ch.isalnum() or ch == "_" for ch in physical_name("weird name/../x"))
