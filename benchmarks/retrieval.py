"""Retrieval quality on a small bilingual (zh/en) fixture: dense vs lexical vs hybrid.

    python benchmarks/retrieval.py [--model DIR]

The fixture (benchmarks/data/retrieval_fixture.json) holds 40 HR / IT policy passages, each
in English and Chinese, and 25 queries in either language with graded relevance (the passage
in the query's language first, its translation second). Everything runs on the real stack:
the embedding engine (bundled all-MiniLM-L6-v2 by default) and Milvus Lite with BM25 over
jieba-segmented text. Prints nDCG@10 and recall@5 per mode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedgate.config import Settings
from embedgate.engine import EmbedRequest, load_engine
from embedgate.knowledge.vector_store import ChunkRow, MilvusVectorStore
from embedgate.services import engine_config

FIXTURE = Path(__file__).parent / "data" / "retrieval_fixture.json"


def ndcg_at(ranked: list[str], relevant: list[str], k: int = 10) -> float:
    gains = {doc: 1.0 / (1 + i) for i, doc in enumerate(relevant)}  # 1.0, 0.5
    dcg = sum(gains.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gains.values(), reverse=True)))
    return dcg / ideal


def recall_at(ranked: list[str], relevant: list[str], k: int = 5) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    fixture = json.loads(FIXTURE.read_text())
    engine = load_engine(engine_config(Settings(model=args.model)))
    engine.start()
    workdir = Path(tempfile.mkdtemp(prefix="embedgate-retrieval-"))
    store = MilvusVectorStore(str(workdir / "milvus.db"))
    store.ensure_collection("fixture", engine.spec.native_dimensions)
    ids = list(fixture["passages"])
    texts = [fixture["passages"][i] for i in ids]
    vectors = engine.embed_sync(EmbedRequest(texts, input_type="document")).vectors
    store.upsert(
        "fixture",
        [
            ChunkRow(i, i, 0, t, 1, 0, len(t), "", v.tolist())
            for i, t, v in zip(ids, texts, vectors, strict=True)
        ],
    )
    scores: dict[str, list[tuple[float, float]]] = {"dense": [], "lexical": [], "hybrid": []}
    for q in fixture["queries"]:
        vector = (
            engine.embed_sync(EmbedRequest([q["query"]], input_type="query")).vectors[0].tolist()
        )
        runs = {
            "dense": store.dense("fixture", vector, 10),
            "lexical": store.lexical("fixture", q["query"], 10),
            "hybrid": store.hybrid("fixture", vector, q["query"], 10),
        }
        for mode, hits in runs.items():
            ranked = [h.document_id for h in hits]
            scores[mode].append((ndcg_at(ranked, q["relevant"]), recall_at(ranked, q["relevant"])))
    engine.stop()
    print(f"model {engine.name}; {len(ids)} passages, {len(fixture['queries'])} queries (zh + en)")
    print(f"{'mode':8} {'nDCG@10':>8} {'recall@5':>9}")
    summary = {}
    for mode, values in scores.items():
        ndcg = sum(v[0] for v in values) / len(values)
        recall = sum(v[1] for v in values) / len(values)
        summary[mode] = (ndcg, recall)
        print(f"{mode:8} {ndcg:8.3f} {recall:9.3f}")
    best_single = max(summary["dense"][0], summary["lexical"][0])
    print(f"hybrid beats both on nDCG@10: {summary['hybrid'][0] > best_single}")


if __name__ == "__main__":
    main()
