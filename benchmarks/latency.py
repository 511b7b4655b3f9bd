"""One short query and one knowledge-base search: latency against the eager forward pass.

    python benchmarks/latency.py [--sizes 10000,100000] [--queries 200]

In one run on one machine, with default settings:

- the baseline: the bundled MiniLM's eager PyTorch fp32 forward (transformers' `AutoModel`,
  mean pooling, normalisation) for one short query, in this process, torch's default threads;
- the API: one `embedgate serve` (default settings) answering `POST /v1/embeddings` with one
  short query at a time over a kept-alive connection: p50 / p99;
- the knowledge base: the same server on a Milvus server process, a collection filled with
  synthetic chunks (`knowledge_scale.py`'s clustered vectors and bilingual text) up to each
  size; dense, lexical and hybrid search p50 / p99 over HTTP (query embedding included).

Each figure is printed with its ratio to the baseline's p50. The targets of issue 33: the
single query through the API <= 0.6x the eager forward, dense search at 10k chunks <= 1.0x.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import WORDS_EN, WORDS_ZH, host_line, percentile
from embedgate.config import Settings
from embedgate.engine.loading import bundled_model_dir
from embedgate.identity import Principal, Role
from embedgate.knowledge.vector_store import MilvusVectorStore
from embedgate.services import open_services_sync
from embedgate.storage.catalog import Catalog
from embedgate.storage.database import database_url, open_database
from knowledge_scale import Synthetic, fill, start_server
from support.services import milvus_server

QUERIES = [
    "how many days of annual leave",
    "reset my VPN password",
    "expense report deadline",
    "who approves overtime",
    "parental leave policy",
    "年假有几天",
    "security badge replacement",
    "laptop support hours",
]


def timed_ms(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def eager_forward_ms(n: int) -> list[float]:
    """The baseline: transformers' eager forward of the bundled MiniLM, fp32, in process."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = str(bundled_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    texts = iter(range(10**9))

    def once() -> None:
        text = QUERIES[next(texts) % len(QUERIES)]
        batch = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        torch.nn.functional.normalize(pooled, dim=-1)

    timed_ms(once, 20)  # warm up
    return timed_ms(once, n)


def qwen3_forward(n: int) -> None:
    """Qwen3-Embedding-0.6B's shape (random weights, the real vocabulary): one short query's
    forward, eager PyTorch (fp32; bf16 where native) against the same graph exported to ONNX
    and run on ONNX Runtime: is the small-pass runtime worth it for a decoder model?"""
    import torch
    from transformers import AutoModel, Qwen3Model

    from embedgate.engine.backends.onnx.small_pass import OnnxEncoder
    from embedgate.engine.backends.torch.onnx_export import export_pooled_encoder
    from embedgate.engine.factory import cpu_has_native_bf16
    from qwen3_shapes import qwen3_06b_config
    from support import models

    with tempfile.TemporaryDirectory() as work:
        model_dir = Path(work) / "Qwen3-Embedding-0.6B-shape"
        torch.manual_seed(0)
        Qwen3Model(qwen3_06b_config(32768)).save_pretrained(str(model_dir))
        tokenizer = models.real_qwen_tokenizer()
        models.save_tokenizer(tokenizer, model_dir)
        text = "how many days of annual leave do I get"
        ids = torch.tensor([tokenizer.encode(text).ids])  # type: ignore[attr-defined]
        mask = torch.ones_like(ids)
        print(f"\nQwen3-0.6B shape, one query of {ids.shape[1]} tokens")
        print("| runtime | p50 ms | p99 ms |")
        print("|---|---:|---:|")
        for dtype in ("float32", "bfloat16") if cpu_has_native_bf16() else ("float32",):
            model = AutoModel.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()

            def eager(model: object = model) -> None:
                with torch.inference_mode():
                    model(input_ids=ids, attention_mask=mask)  # type: ignore[operator]

            timed_ms(eager, 5)
            values = timed_ms(eager, n)
            print(f"| eager PyTorch {dtype} | {statistics.median(values):.1f} | "
                  f"{percentile(values, 0.99):.1f} |", flush=True)  # fmt: skip
            del model
        target = Path(work) / "qwen3.onnx"
        started = time.perf_counter()
        export_pooled_encoder(model_dir, "last", target)
        print(f"(export: {time.perf_counter() - started:.0f} s)")
        encoder = OnnxEncoder(target)
        feed = (ids.numpy(), mask.numpy())
        timed_ms(lambda: encoder.forward(*feed), 5)
        values = timed_ms(lambda: encoder.forward(*feed), n)
        print(f"| ONNX Runtime float32 | {statistics.median(values):.1f} | "
              f"{percentile(values, 0.99):.1f} |")  # fmt: skip


def row(label: str, values: list[float], baseline: float) -> None:
    p50 = statistics.median(values)
    print(
        f"| {label} | {p50:.1f} | {percentile(values, 0.99):.1f} | {p50 / baseline:.2f}x |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--qwen3", action="store_true", help="only the Qwen3-0.6B shape's one-query forward"
    )
    args = parser.parse_args()
    print(host_line())
    if args.qwen3:
        qwen3_forward(args.queries)
        return
    n = args.queries
    baseline_values = eager_forward_ms(n)
    baseline = statistics.median(baseline_values)
    print()
    print("| what | p50 ms | p99 ms | p50 / eager forward |")
    print("|---|---:|---:|---:|")
    row("eager PyTorch fp32 forward, in process (baseline)", baseline_values, baseline)
    work = Path(tempfile.mkdtemp(prefix="embedgate-latency-"))
    with milvus_server() as milvus:
        settings = Settings(data_dir=work / "data", milvus_uri=milvus.uri)
        with open_services_sync(settings) as (services, _loop):
            services.require_knowledge().create_collection(
                Principal(subject="bench", role=Role.ADMIN), "latency"
            )
        catalog = Catalog(open_database(database_url(None, settings.data_dir)))
        store = MilvusVectorStore(milvus.uri)
        info = catalog.collection("latency")
        assert info is not None and info.store_name is not None
        server, base = start_server(settings, milvus.uri)
        try:
            key = (settings.data_dir / "admin.key").read_text().strip()
            http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            picks = iter(range(10**9))

            def embed_one() -> None:
                text = QUERIES[next(picks) % len(QUERIES)]
                http.post("/v1/embeddings", json={"input": text}).raise_for_status()

            timed_ms(embed_one, 50)  # warm up
            row("API: one short query, POST /v1/embeddings", timed_ms(embed_one, n), baseline)
            data, filled = Synthetic(seed=3), 0
            words = random.Random(7)
            for size in [int(s) for s in args.sizes.split(",") if s]:
                fill(
                    store,
                    catalog,
                    collection="latency",
                    store_name=info.store_name,
                    start=filled,
                    stop=size,
                    data=data,
                )
                filled = size
                for mode in ("dense", "lexical", "hybrid"):

                    def search(mode: str = mode) -> None:
                        source = WORDS_ZH if words.random() < 0.5 else WORDS_EN
                        query = " ".join(words.choices(source, k=3))
                        body = {"query": query, "mode": mode, "top_k": 10}
                        http.post("/v1/collections/latency/search", json=body).raise_for_status()

                    timed_ms(search, 20)
                    row(f"{mode} search, {size:,} chunks", timed_ms(search, n), baseline)
        finally:
            server.terminate()
            server.wait(timeout=30)
            store.close()


if __name__ == "__main__":
    main()
