"""Ingest throughput and search latency of the knowledge base (in-process, real Milvus Lite).

    python benchmarks/ingest.py [--docs 24] [--chunks 100000] [--dtype bfloat16]

Part 1 ingests generated documents (Markdown, HTML and text, ~2,500 tokens each) through the
real job runner: parse in a worker process, chunk, embed through the batching engine, check
near-duplicates, upsert. It prints chunks/s and the share of wall time spent in the model's
forward pass (target >= 70%: parsing and storage must not be the bottleneck).

Part 2 fills a collection with `--chunks` rows (random unit vectors and random bilingual
text; search cost does not depend on what the vectors mean) and prints p50 / p95 latency of
dense, lexical and hybrid search, in the store alone and end to end with the query embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import WORDS_EN, WORDS_ZH, percentile
from embedgate.config import Settings
from embedgate.engine import EmbedRequest
from embedgate.identity import Principal, Role
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.vector_store import ChunkRow
from embedgate.services import Services, open_services_sync

WORDS = WORDS_EN[:21] + WORDS_ZH[:15]


def forward_seconds(services: Services) -> float:
    """Time the model spent in forward passes so far (the engine's own histogram)."""
    registry = services.metrics.registry
    return registry.get_sample_value("embedgate_forward_duration_seconds_sum") or 0.0


def document(rng: random.Random, index: int) -> tuple[str, bytes]:
    paragraphs = []
    for p in range(60):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40)))
        paragraphs.append(f"{sentence.capitalize()}. Section {index}.{p} ends here.")
    kind = index % 3
    if kind == 0:
        body = f"# Document {index}\n\n" + "\n\n".join(paragraphs)
        return f"doc{index}.md", body.encode()
    if kind == 1:
        body = f"<html><body><h1>Document {index}</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs)
        return f"doc{index}.html", (body + "</body></html>").encode()
    return f"doc{index}.txt", "\n\n".join(paragraphs).encode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="embedgate-ingest-"))
    settings = Settings(data_dir=data_dir, dtype=args.dtype, model=args.model)
    with open_services_sync(settings) as (services, loop):
        run_benchmark(args, services, loop)


def run_benchmark(args: argparse.Namespace, services: Services, loop: asyncio.Runner) -> None:
    engine, kb = services.require_engine(), services.require_knowledge()
    me = Principal(subject="bench", role=Role.ADMIN)
    kb.create_collection(me, "bench")
    rng = random.Random(7)
    files = [document(rng, i) for i in range(args.docs)]
    engine.embed_sync(EmbedRequest(["warm up"]))
    # steady state: the parse worker process is long-lived in a server, start it first
    kb.runner.parser.parse("warm.txt", b"warm up", ParseLimits(), 60)
    forward_before = forward_seconds(services)
    started = time.perf_counter()
    for name, data in files:
        kb.upload(me, "bench", name, data)
    kb.runner.idle.wait(0.5)
    while not kb.runner.idle.is_set() or any(
        d["status"] not in ("ready", "failed", "duplicate") for d in kb.catalog.documents("bench")
    ):
        time.sleep(0.1)
    wall = time.perf_counter() - started
    docs = kb.catalog.documents("bench")
    chunks = sum(int(d["chunks"]) for d in docs)
    tokens = sum(int(d["tokens"]) for d in docs)
    failed = [d for d in docs if d["status"] == "failed"]
    print(
        f"ingest: {len(docs)} documents ({len(failed)} failed), {chunks} chunks, {tokens} tokens "
        f"in {wall:.1f} s -> {chunks / wall:.1f} chunks/s, {tokens / wall:.0f} tokens/s"
    )
    print(
        "share of wall time in the model forward pass: "
        f"{(forward_seconds(services) - forward_before) / wall:.1%} (target >= 70%)"
    )

    # --- search latency at scale ---------------------------------------------------------
    store = kb.store
    store.ensure_collection("scale", engine.spec.native_dimensions)
    vec_rng = np.random.default_rng(0)
    text_rng = random.Random(1)
    started = time.perf_counter()
    for start in range(0, args.chunks, 5000):
        n = min(5000, args.chunks - start)
        vectors = vec_rng.standard_normal((n, engine.spec.native_dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            ChunkRow(
                f"s{start + i}",
                f"d{(start + i) // 100}",
                i,
                " ".join(text_rng.choices(WORDS, k=60)),
                1,
                1,
                0,
                1,
                (),
                vectors[i].tolist(),
            )
            for i in range(n)
        ]
        store.upsert("scale", rows)
    store.flush("scale")
    print(
        f"\nloaded {args.chunks} chunks into Milvus Lite in {time.perf_counter() - started:.0f} s"
    )
    queries = [" ".join(text_rng.choices(WORDS, k=4)) for _ in range(args.queries)]
    qvecs = [
        engine.embed_sync(EmbedRequest([q], input_type="query")).vectors[0].tolist()
        for q in queries
    ]
    runs = {
        "dense": lambda i: store.dense("scale", qvecs[i], 10),
        "lexical": lambda i: store.lexical("scale", queries[i], 10),
        "hybrid": lambda i: store.hybrid("scale", qvecs[i], queries[i], 10),
    }
    print(f"{'mode':8} {'store p50':>10} {'p95':>8} {'end-to-end p50':>15} {'p95':>8}  (ms)")
    for mode, run in runs.items():
        store_ms, total_ms = [], []
        for i in range(args.queries):
            t0 = time.perf_counter()
            if mode != "lexical":
                loop.run(engine.embed(EmbedRequest([queries[i]], input_type="query")))
            t1 = time.perf_counter()
            run(i)
            t2 = time.perf_counter()
            store_ms.append((t2 - t1) * 1000)
            total_ms.append((t2 - t0) * 1000)
        print(
            f"{mode:8} {statistics.median(store_ms):10.1f} {percentile(store_ms, 0.95):8.1f} "
            f"{statistics.median(total_ms):15.1f} {percentile(total_ms, 0.95):8.1f}"
        )
    print("targets at 100k chunks on this machine: dense <= 20 ms, hybrid <= 60 ms")


if __name__ == "__main__":
    main()
