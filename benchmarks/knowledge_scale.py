"""The knowledge base at 10k / 100k / 1M chunks: search latency, recall, memory, ingest rate.

    python benchmarks/knowledge_scale.py [--sizes 10000,100000,1000000]
                                         [--ingest-at 0,10000,50000] [--queries 100]

One Milvus Lite server process on a TCP port holds the data (the same binary the embedded
default starts over a Unix socket), and one `embedgate serve` process (the bundled model)
runs for the whole benchmark, so the collection grows under a running server.

Search: a collection is filled with synthetic chunks up to each size (clustered unit vectors,
bilingual word-soup text), registered as ready documents in the catalog. For each size it
prints p50 / p95 per mode through the HTTP API (query embedding included), the store's own
p50 / p95 for the same searches, recall@10 of the dense index against exact search (numpy
over every vector), and the RSS of the server and of Milvus.

Ingest: a second collection is filled to each level, then real documents are uploaded
through the API and indexed by the running server; it prints chunks/s at each level and the
server's RSS growth per 1k chunks ingested.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import WORDS_EN, WORDS_ZH, percentile, rss_mib, start_serve, wait_served
from embedgate.config import Settings
from embedgate.engine import EmbedRequest
from embedgate.identity import Principal, Role
from embedgate.knowledge.vector_store import ChunkRow, MilvusVectorStore
from embedgate.services import open_services_sync
from embedgate.storage.catalog import Catalog
from embedgate.storage.database import database_url, open_database
from support.services import milvus_server

DIMS = 384


class Synthetic:
    """Clustered unit vectors (real embeddings have structure; uniform noise is the worst
    case for any index) and random bilingual text."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.text_rng = random.Random(seed)
        self.centres = self.rng.standard_normal((1000, DIMS)).astype(np.float32)

    def vectors(self, n: int) -> np.ndarray:
        picks = self.centres[self.rng.integers(0, len(self.centres), n)]
        x = picks + 0.7 * self.rng.standard_normal((n, DIMS)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def text(self) -> str:
        words = WORDS_ZH if self.text_rng.random() < 0.5 else WORDS_EN
        return " ".join(self.text_rng.choices(words, k=40))


def fill(
    store: MilvusVectorStore,
    catalog: Catalog,
    *,
    collection: str,
    store_name: str,
    start: int,
    stop: int,
    data: Synthetic,
    keep: list[np.ndarray] | None = None,
) -> None:
    """Chunks start..stop as ready documents of 1,000 chunks each."""
    for first in range(start, stop, 1000):
        n = min(1000, stop - first)
        vectors = data.vectors(n)
        if keep is not None:
            keep.append(vectors)
        doc = f"syn{collection}{first}"
        rows = [
            ChunkRow(f"{doc}:{i}", doc, i, data.text(), 1, 1, 0, 0, (), vectors[i].tolist())
            for i in range(n)
        ]
        store.upsert(store_name, rows)
        catalog.add_document(
            doc, collection=collection, filename=f"{doc}.txt", digest=doc, size=1, status="ready"
        )
        catalog.update_document(doc, chunks=n, language="en")
    store.flush(store_name)


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ingest-at", default="0,10000,50000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ingest-docs", type=int, default=60)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    levels = [int(s) for s in args.ingest_at.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="embedgate-scale-"))
    with milvus_server() as milvus:
        settings = Settings(data_dir=work / "data", milvus_uri=milvus.uri)
        with open_services_sync(settings) as (services, _loop):
            kb, engine = services.require_knowledge(), services.require_engine()
            me = Principal(subject="bench", role=Role.ADMIN)
            for name in ("scale", "ingest"):
                kb.create_collection(me, name)
            queries = [
                " ".join(random.Random(i).choices(WORDS_ZH if i % 2 else WORDS_EN, k=3))
                for i in range(args.queries)
            ]
            query_vectors = engine.embed_sync(EmbedRequest(queries, input_type="query")).vectors
        catalog = Catalog(open_database(database_url(None, settings.data_dir)))
        store = MilvusVectorStore(milvus.uri)
        names = {n: catalog.collection(n).store_name for n in ("scale", "ingest")}  # type: ignore[union-attr]
        server, base = start_server(settings, milvus.uri)
        try:
            headers = {
                "Authorization": f"Bearer {(settings.data_dir / 'admin.key').read_text().strip()}"
            }
            http = httpx.Client(base_url=base, headers=headers, timeout=120)
            ingest_rates(http, store, catalog, names["ingest"], levels, args, server, milvus)
            search_at_sizes(
                http,
                store,
                catalog,
                names["scale"],
                sizes,
                args,
                queries,
                query_vectors,
                server,
                milvus,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
            store.close()


def start_server(settings: Settings, uri: str) -> tuple[subprocess.Popen[bytes], str]:
    served = start_serve(settings.data_dir, EMBEDGATE_MILVUS_URI=uri)
    wait_served(served)
    return served.process, served.base


def ingest_rates(
    http: httpx.Client,
    store: MilvusVectorStore,
    catalog: Catalog,
    store_name: str | None,
    levels: list[int],
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    milvus: object,
) -> None:
    assert store_name is not None
    data = Synthetic(seed=1)
    filled = 0
    rng = random.Random(3)
    # a full-size document first: the parse worker, the analyzer's dictionary and the
    # model's batch buffers are one-time costs, not growth per chunk
    upload_and_wait(http, [("warm-up.txt", document(rng))])
    print(
        "| chunks already in the collection | ingested | chunks/s | server RSS MB before -> after "
        "| MB per 1k chunks |"
    )
    print("|---:|---:|---:|---|---:|")
    for level in levels:
        fill(
            store,
            catalog,
            collection="ingest",
            store_name=store_name,
            start=filled,
            stop=level,
            data=data,
        )
        filled = max(filled, level)
        before = rss_mib(server.pid) or 0.0
        files = [(f"d{level}-{i}.txt", document(rng)) for i in range(args.ingest_docs)]
        started = time.perf_counter()
        upload_and_wait(http, files)
        wall = time.perf_counter() - started
        docs = http.get("/v1/collections/ingest/documents").json()["data"]
        chunks = sum(d["chunks"] for d in docs if d["filename"].startswith(f"d{level}-"))
        after = rss_mib(server.pid) or 0.0
        print(
            f"| {level:,} | {chunks} | {chunks / wall:.1f} | {before:.0f} -> {after:.0f} "
            f"| {(after - before) / (chunks / 1000):.1f} |",
            flush=True,
        )


def document(rng: random.Random) -> bytes:
    paragraphs = [
        " ".join(rng.choices(WORDS_EN + WORDS_ZH, k=rng.randint(30, 60))) + "." for _ in range(40)
    ]
    return "\n\n".join(paragraphs).encode()


def upload_and_wait(http: httpx.Client, files: list[tuple[str, bytes]]) -> None:
    jobs = []
    for name, body in files:
        accepted = http.post("/v1/collections/ingest/documents", files={"file": (name, body)})
        accepted.raise_for_status()
        jobs.append(accepted.json()["job"]["id"])
    for job_id in jobs:
        while http.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.1)


def search_at_sizes(
    http: httpx.Client,
    store: MilvusVectorStore,
    catalog: Catalog,
    store_name: str | None,
    sizes: list[int],
    args: argparse.Namespace,
    queries: list[str],
    query_vectors: np.ndarray,
    server: subprocess.Popen[bytes],
    milvus: object,
) -> None:
    assert store_name is not None
    data = Synthetic(seed=2)
    kept: list[np.ndarray] = []
    filled = 0
    print()
    print("| chunks | mode | HTTP p50 ms | HTTP p95 ms | store p50 ms | store p95 ms |")
    print("|---:|---|---:|---:|---:|---:|")
    for size in sizes:
        started = time.perf_counter()
        fill(
            store,
            catalog,
            collection="scale",
            store_name=store_name,
            start=filled,
            stop=size,
            data=data,
            keep=kept,
        )
        load_s = time.perf_counter() - started
        filled = size
        everything = np.concatenate(kept)
        n = args.queries
        probes = everything[np.random.default_rng(5).integers(0, len(everything), n)]
        probes = probes + 0.3 * np.random.default_rng(6).standard_normal(probes.shape)
        probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
        exact = np.argsort(-(probes @ everything.T), axis=1)[:, :10]
        ids = [f"synscale{(i // 1000) * 1000}:{i % 1000}" for i in range(len(everything))]
        recall = []
        for q in range(n):
            found = {h.id for h in store.dense(store_name, probes[q].tolist(), 10)}
            recall.append(len(found & {ids[i] for i in exact[q]}) / 10)
        http.post("/v1/collections/scale/search", json={"query": queries[0]})  # warm
        for mode in ("dense", "lexical", "hybrid"):
            counter = iter(range(10**9))

            def over_http(mode: str = mode, counter: object = counter, n: int = n) -> None:
                q = queries[next(counter) % n]  # type: ignore[call-overload]
                response = http.post(
                    "/v1/collections/scale/search", json={"query": q, "mode": mode, "top_k": 10}
                )
                response.raise_for_status()

            api = timed(over_http, n)
            local = iter(range(10**9))

            def in_store(mode: str = mode, local: object = local, n: int = n) -> None:
                i = next(local) % n  # type: ignore[call-overload]
                vector = query_vectors[i].tolist()
                if mode == "dense":
                    store.dense(store_name, vector, 30)
                elif mode == "lexical":
                    store.lexical(store_name, queries[i], 30)
                else:
                    store.hybrid(store_name, vector, queries[i], 30)

            own = timed(in_store, n)
            print(
                f"| {size:,} | {mode} | {percentile(api, 0.5):.1f} | {percentile(api, 0.95):.1f}"
                f" | {percentile(own, 0.5):.1f} | {percentile(own, 0.95):.1f} |",
                flush=True,
            )
        milvus_pid = milvus.process.pid  # type: ignore[attr-defined]
        print(
            f"| {size:,} | recall@10 dense vs exact: {sum(recall) / n:.3f}; loaded in "
            f"{load_s:.0f} s; RSS server {rss_mib(server.pid) or 0:.0f} MB, Milvus "
            f"{rss_mib(milvus_pid) or 0:.0f} MB | | | | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
