"""Reranking speed: sentence-transformers' CrossEncoder (the baseline) against embedgate's
rerank engine, in one run on the same model and pairs, printed as pairs/s and ratios.

    python benchmarks/rerank.py            # ms-marco-MiniLM-L6 shape, random weights
    python benchmarks/rerank.py --quick    # a quarter of the pairs, one repeat
    python benchmarks/rerank.py --qwen3    # also the Qwen3-Reranker-0.6B shape (slow on CPU)

Pairs: queries of ~10 words, documents of 20-200 words (mixed), 50 documents per query.
The baseline is `CrossEncoder.predict(pairs, batch_size=32)` fp32 in-process (for Qwen3, the
model card's code in batches of 8); embedgate is the engine as served (a model process, two
forward threads, token-bounded passes), one query's documents per request, requests from
four threads. Also: the model process's memory, and a small rerank request's latency while
another caller embeds big batches on the same server. Target (issue 32): >= 2x CrossEncoder.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from common import PROSE_WORDS, host_line, percentile, rss_mib, start_serve, stop, wait_served
from embedgate.engine import EngineConfig, RerankEngine, RerankRequest, load_reranker
from embedgate.engine.loading import bundled_model_dir
from support import models
from support.engines import fast_dtype
from support.rerankers import Qwen3Reference


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(PROSE_WORDS) for _ in range(words)).capitalize() + "."


def workload(count: int, per_query: int, seed: int = 1) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [
        (text(rng, 10), [text(rng, rng.randint(20, 200)) for _ in range(per_query)])
        for _ in range(count // per_query)
    ]


def best(repeats: int, run: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def engine_rate(engine: RerankEngine, work: list[tuple[str, list[str]]], repeats: int) -> float:
    """Pairs/s with four threads each sending one query's documents per request."""

    def run() -> None:
        queue = list(work)
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    query, documents = queue.pop()
                engine.rerank_sync(RerankRequest(query=query, documents=documents))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    engine.rerank_sync(RerankRequest(query=work[0][0], documents=work[0][1]))  # warm-up
    pairs = sum(len(documents) for _, documents in work)
    return pairs / best(repeats, run)


def cross_encoder(args: argparse.Namespace, root: Path) -> None:
    from sentence_transformers import CrossEncoder

    model_dir = models.build_tiny_cross_encoder(
        root / "ms-marco-MiniLM-L6-shape",
        bundled_model_dir(),
        hidden=384,
        layers=6,
        heads=12,
        init_std=0.02,
    )
    work = workload(2000 // args.scale, 50)
    pairs = [(q, d) for q, documents in work for d in documents]
    baseline = CrossEncoder(str(model_dir), device="cpu")
    baseline.predict(pairs[:64], batch_size=32)  # warm-up
    base = len(pairs) / best(args.repeats, lambda: baseline.predict(pairs, batch_size=32))
    rows = [("CrossEncoder.predict fp32, batch 32 (baseline)", base, None)]
    for dtype in dict.fromkeys(["float32", fast_dtype()]):
        engine = load_reranker(EngineConfig(model=str(model_dir), dtype=dtype))
        engine.start()
        try:
            rate = engine_rate(engine, work, args.repeats)
            pid = engine.health().model_pid
            rows.append((f"embedgate rerank engine {dtype}", rate, rss_mib(pid) if pid else None))
        finally:
            engine.stop()
    print(f"\nms-marco-MiniLM-L6 shape: {len(pairs)} pairs, {len(work)} queries")
    for name, rate, rss in rows:
        memory = f"  model process {rss:.0f} MiB" if rss else ""
        print(f"{name:50} {rate:8.1f} pairs/s {rate / base:6.2f}x{memory}")
    small_while_embedding(model_dir, work)


def small_while_embedding(model_dir: Path, work: list[tuple[str, list[str]]]) -> None:
    """One server, MiniLM embeddings and the cross-encoder: a caller reranking 10 documents
    at a time while another embeds 256-input batches without pause."""
    with tempfile.TemporaryDirectory() as data:
        served = start_serve(
            Path(data), "--model", str(bundled_model_dir()), "--model", str(model_dir)
        )
        try:
            wait_served(served)
            until = time.monotonic() + 60
            while time.monotonic() < until:
                ready = httpx.get(served.base + "/ready", timeout=5).json()
                if set(ready.get("models", {}).values()) == {"ready"}:
                    break
                time.sleep(0.5)
            http = httpx.Client(base_url=served.base, headers=served.admin, timeout=120)
            query, documents = work[0]
            body = {"query": query, "documents": documents[:10]}

            def small() -> list[float]:
                took = []
                for _ in range(30):
                    started = time.perf_counter()
                    assert http.post("/v1/rerank", json=body).status_code == 200
                    took.append(time.perf_counter() - started)
                return took

            alone = small()
            stop_bulk = threading.Event()
            big = [text(random.Random(i), 120) for i in range(256)]

            def bulk() -> None:
                with httpx.Client(base_url=served.base, headers=served.admin, timeout=300) as c:
                    while not stop_bulk.is_set():
                        c.post("/v1/embeddings", json={"input": big})

            sender = threading.Thread(target=bulk)
            sender.start()
            time.sleep(1.0)
            loaded = small()
            stop_bulk.set()
            sender.join()
            http.close()
        finally:
            stop(served)
    print(
        f"\nsmall rerank (10 documents) p50 / p95: alone {statistics.median(alone) * 1000:.0f} / "
        f"{percentile(alone, 0.95) * 1000:.0f} ms; while another caller embeds 256-input "
        f"batches {statistics.median(loaded) * 1000:.0f} / {percentile(loaded, 0.95) * 1000:.0f} ms"
    )


def qwen3(args: argparse.Namespace, root: Path) -> None:
    import torch
    from transformers import Qwen3ForCausalLM

    from qwen3_shapes import qwen3_06b_config

    model_dir = root / "Qwen3-Reranker-0.6B-shape"
    model_dir.mkdir()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(qwen3_06b_config(40960)).eval()
    model.to(torch.bfloat16).save_pretrained(str(model_dir))  # bf16 on disk, as published
    models.save_tokenizer(models.real_qwen_tokenizer(), model_dir)
    work = workload(32, 8, seed=2)
    pairs = [(q, d) for q, documents in work for d in documents]

    card = Qwen3Reference(model_dir)

    def reference() -> None:
        for start in range(0, len(pairs), 8):
            card.scores(pairs[start : start + 8], None, 8192)

    reference_rate = len(pairs) / best(1, reference)
    engine = load_reranker(EngineConfig(model=str(model_dir)))
    engine.start()
    try:
        rate = engine_rate(engine, work, 1)
        pid = engine.health().model_pid
        rss = rss_mib(pid) if pid else None
    finally:
        engine.stop()
    print(f"\nQwen3-Reranker-0.6B shape fp32: {len(pairs)} pairs")
    print(f"model card code, batches of 8 (baseline)  {reference_rate:8.2f} pairs/s")
    print(
        f"embedgate rerank engine float32           {rate:8.2f} pairs/s "
        f"{rate / reference_rate:6.2f}x  model process {rss or 0:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qwen3", action="store_true")
    args = parser.parse_args()
    args.scale = 4 if args.quick else 1
    args.repeats = 1 if args.quick else args.repeats
    print(host_line())
    with tempfile.TemporaryDirectory(prefix="embedgate-rerank-bench-") as root:
        cross_encoder(args, Path(root))
        if args.qwen3:
            qwen3(args, Path(root))


if __name__ == "__main__":
    main()
