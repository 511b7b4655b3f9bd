"""Retrieval quality on embedgate's own bilingual evaluation set: dense, lexical and hybrid.

    python benchmarks/retrieval.py [--model DIR] [--sweep]

The set (benchmarks/data/retrieval_eval.json, written for this project) holds 156 enterprise
passages (80 Chinese, 76 English; most with a translation, with near-miss distractors) and 70
queries in Chinese and English, 10 of them cross-lingual, with graded relevance. Everything
runs on the real stack: the embedding engine (the bundled all-MiniLM-L6-v2 unless --model)
and Milvus Lite with BM25 over embedgate's own analysed terms. Prints nDCG@10 and top-1 per
mode and query language. "hybrid" is what the server does (weights chosen by the model's
language coverage); "hybrid-balanced" weights both sides equally. --sweep prints hybrid's
nDCG@10 for a range of dense weights on the queries the model does not cover.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedgate.config import Settings
from embedgate.engine import EmbedRequest, load_engine
from embedgate.knowledge.analysis import script_language
from embedgate.knowledge.search import fusion_for
from embedgate.knowledge.vector_store import ChunkRow, FusionWeights, Hit, MilvusVectorStore
from embedgate.services import engine_config

EVAL_SET = Path(__file__).parent / "data" / "retrieval_eval.json"


def ndcg_at(ranked: Sequence[str], grades: dict[str, float], k: int = 10) -> float:
    dcg = sum(grades.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sum(
        g / math.log2(i + 2) for i, g in enumerate(sorted(grades.values(), reverse=True)[:k])
    )
    return dcg / ideal


def top1(ranked: Sequence[str], grades: dict[str, float]) -> float:
    """1 when the first hit is a best-graded passage."""
    return float(bool(ranked) and grades.get(ranked[0], 0.0) == max(grades.values()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    data = json.loads(EVAL_SET.read_text(encoding="utf-8"))
    engine = load_engine(engine_config(Settings(model=args.model)))
    engine.start()
    workdir = Path(tempfile.mkdtemp(prefix="embedgate-retrieval-"))
    store = MilvusVectorStore(str(workdir / "milvus.db"))
    store.ensure_collection("eval", engine.spec.native_dimensions)
    ids = list(data["passages"])
    texts = [data["passages"][i] for i in ids]
    vectors = engine.embed_sync(EmbedRequest(texts, input_type="document")).vectors
    store.upsert(
        "eval",
        [
            ChunkRow(i, i, 0, t, 1, 1, 0, len(t), (), v.tolist())
            for i, t, v in zip(ids, texts, vectors, strict=True)
        ],
    )
    store.flush("eval")
    modes = ["dense", "lexical", "hybrid-balanced", "hybrid"]
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    sweep: dict[float, list[float]] = {}
    for q in data["queries"]:
        vector = (
            engine.embed_sync(EmbedRequest([q["query"]], input_type="query")).vectors[0].tolist()
        )
        weights = fusion_for(query=q["query"], covers=engine.spec.covers, configured=None)
        runs: dict[str, list[Hit]] = {
            "dense": store.dense("eval", vector, 10),
            "lexical": store.lexical("eval", q["query"], 10),
            "hybrid-balanced": store.hybrid("eval", vector, q["query"], 10),
            "hybrid": store.hybrid("eval", vector, q["query"], 10, weights),
        }
        group = q["language"] if q["kind"] == "monolingual" else "cross"
        for mode, hits in runs.items():
            ranked = [h.document_id for h in hits]
            for key in (group, "all"):
                rows.setdefault((mode, key), []).append(
                    (ndcg_at(ranked, q["relevant"]), top1(ranked, q["relevant"]))
                )
        if args.sweep and not engine.spec.covers(script_language(q["query"])):
            for w in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
                hits = store.hybrid("eval", vector, q["query"], 10, FusionWeights(w, 1.0))
                sweep.setdefault(w, []).append(
                    ndcg_at([h.document_id for h in hits], q["relevant"])
                )
    engine.stop()
    store.close()
    groups = ["zh", "en", "cross", "all"]
    counts = {g: len(rows[("dense", g)]) for g in groups}
    print(
        f"model {engine.name} (languages: {', '.join(engine.spec.languages) or 'multilingual'});"
        f" {len(ids)} passages, {len(data['queries'])} queries "
        f"(zh {counts['zh']}, en {counts['en']}, cross-lingual {counts['cross']})"
    )
    print("| mode | " + " | ".join(f"nDCG@10 {g} | top-1 {g}" for g in groups) + " |")
    print("|---" * (1 + 2 * len(groups)) + "|")
    for mode in modes:
        cells = []
        for g in groups:
            values = rows[(mode, g)]
            cells.append(f"{sum(v[0] for v in values) / len(values):.3f}")
            cells.append(f"{sum(v[1] for v in values) / len(values):.2f}")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    for w, values in sweep.items():
        print(
            f"sweep: dense weight {w:.2f} on uncovered queries: nDCG@10 "
            f"{sum(values) / len(values):.3f}"
        )


if __name__ == "__main__":
    main()
