"""Throughput: sentence-transformers (baseline) vs the embedgate engine vs the HTTP server.

Everything is measured in one run on the same model and corpus, and reported as tokens/s and
as ratios to the baseline, so the numbers compare across noisy machines:

    python benchmarks/throughput.py                      # bundled all-MiniLM-L6-v2
    python benchmarks/throughput.py --model DIR --quick  # another model, smaller corpus

Corpus: 2,000 sentences of ~50 tokens and 200 passages of ~256 tokens, generated from a fixed
seed. Targets on a 2-core CPU: engine bf16 >= 1.8x baseline (cosine >= 0.999 to fp32), HTTP
with 64 concurrent single-input clients >= 0.9x the in-process engine in the same dtype.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import PROSE_WORDS, HttpServer, host_line, redis_server, start_http_server
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, EmbedRequest, load_engine
from embedgate.engine.loading import resolve_model
from embedgate.services import engine_config
from support.engines import fast_dtype


def make_corpus(engine: EmbeddingEngine, count: int, tokens: int, seed: int) -> list[str]:
    """Texts whose token count (special tokens included) is close to `tokens`."""
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < count:
        words = [rng.choice(PROSE_WORDS) for _ in range(tokens)]
        text = " ".join(words)
        [found] = engine.count_tokens([text])
        room = tokens - engine.template.overhead
        if found > room:  # cut at a word boundary near the target
            keep = max(1, int(len(words) * room / found))
            text = " ".join(words[:keep])
        texts.append(text.capitalize() + ".")
    return texts


def count_tokens(engine: EmbeddingEngine, texts: list[str]) -> int:
    return sum(len(s) for s in engine.tokenize(EmbedRequest(texts)))


@dataclass
class Row:
    name: str
    corpus: str
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def best_of(repeats: int, fn: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def baseline(
    model_dir: Path,
    corpora: dict[str, list[str]],
    tokens: dict[str, int],
    repeats: int,
    torch_threads: int,
) -> list[Row]:
    import torch
    from sentence_transformers import SentenceTransformer

    # load_engine splits the cores between its forward threads (a process-wide torch
    # setting); sentence-transformers runs one pass at a time, so it gets torch's default back
    engine_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    # fp32 as labelled, also for checkpoints saved in bf16 (Qwen3-Embedding's are)
    model = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})
    model.max_seq_length = 512
    rows = []
    try:
        for name, texts in corpora.items():
            model.encode(texts[:64], normalize_embeddings=True)  # warm-up
            seconds = best_of(repeats, lambda t=texts: model.encode(t, normalize_embeddings=True))
            rows.append(Row("sentence-transformers fp32 (baseline)", name, tokens[name], seconds))
    finally:
        torch.set_num_threads(engine_threads)
    return rows


def engine_rows(
    engine: EmbeddingEngine,
    label: str,
    corpora: dict[str, list[str]],
    tokens: dict[str, int],
    repeats: int,
) -> tuple[list[Row], dict[str, np.ndarray]]:
    rows, vectors = [], {}
    for name, texts in corpora.items():
        engine.embed_sync(EmbedRequest(texts[:64]))  # warm-up
        out: dict[str, np.ndarray] = {}

        def run(t: list[str] = texts, o: dict[str, np.ndarray] = out) -> None:
            o["v"] = engine.embed_sync(EmbedRequest(t)).vectors

        seconds = best_of(repeats, run)
        vectors[name] = out["v"]
        rows.append(Row(label, name, tokens[name], seconds))
    return rows, vectors


def concurrent_rows(
    engine: EmbeddingEngine,
    label: str,
    corpora: dict[str, list[str]],
    tokens: dict[str, int],
    clients: int,
    repeats: int,
) -> list[Row]:
    """The engine in-process under the HTTP run's request pattern: `clients` asyncio callers,
    one input per request. Separates what HTTP costs from what small, irregular batches cost."""

    async def load(texts: list[str]) -> float:
        index = [0]

        async def client() -> None:
            while index[0] < len(texts):
                text = texts[index[0]]
                index[0] += 1
                await engine.embed(EmbedRequest([text]))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start

    rows = []
    for name, texts in corpora.items():
        asyncio.run(load(texts[:128]))  # warm-up
        seconds = min(asyncio.run(load(texts)) for _ in range(repeats))
        rows.append(Row(label, name, tokens[name], seconds))
    return rows


async def _client(
    port: int, bodies: list[bytes], next_index: list[int], tokens: list[int], auth: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while next_index[0] < len(bodies):
            body = bodies[next_index[0]]
            next_index[0] += 1
            writer.write(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                + auth
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line.startswith(b"HTTP/1.1 ") and not line.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"server answered {line!r}")
            payload = await reader.readexactly(length)
            tokens[0] += json.loads(payload)["usage"]["prompt_tokens"]
    finally:
        writer.close()


async def _load(port: int, texts: list[str], clients: int, key: str = "") -> tuple[int, float]:
    bodies = [json.dumps({"input": t, "encoding_format": "base64"}).encode() for t in texts]
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    tokens, index = [0], [0]
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, bodies, index, tokens, auth) for _ in range(clients)))
    return tokens[0], time.perf_counter() - start


def best_load(server: HttpServer, texts: list[str], clients: int) -> tuple[int, float]:
    return asyncio.run(_load(server.port, texts, clients, server.key))


def http_rows(
    model: str | None,
    dtype: str,
    corpora: dict[str, list[str]],
    clients: int,
    repeats: int,
    model_process: bool = True,
) -> list[Row]:
    env = {"EMBEDGATE_AUTH": "false", "EMBEDGATE_AUDIT": "false"}
    if not model_process:
        env["EMBEDGATE_MODEL_PROCESS"] = "false"
    label = f"HTTP {clients} clients {dtype}" + ("" if model_process else ", threads only")
    server = start_http_server(model, dtype, env)
    try:
        rows = []
        for name, texts in corpora.items():
            best_load(server, texts[:128], clients)  # warm-up
            runs = [best_load(server, texts, clients) for _ in range(repeats)]
            tokens, seconds = min(runs, key=lambda r: r[1])
            rows.append(Row(label, name, tokens, seconds))
        return rows
    finally:
        server.stop()


def security_rows(
    model: str | None, dtype: str, texts: list[str], clients: int, repeats: int
) -> list[Row]:
    """Auth + Redis limits + audit on vs all off; runs alternate so drift hits both alike."""
    import shutil
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="embedgate-bench-"))
    data = workdir / "data"
    create = ["keys", "create", "--name", "bench", "--role", "writer", "--rpm", "1000000"]
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedgate",
            *create,
            "--tpm",
            "1000000000",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    with redis_server() as redis:
        off = start_http_server(
            model, dtype, {"EMBEDGATE_AUTH": "false", "EMBEDGATE_DATA_DIR": str(workdir / "off")}
        )
        on = start_http_server(
            model, dtype, {"EMBEDGATE_DATA_DIR": str(data), "EMBEDGATE_REDIS_URL": redis.url}
        )
        on.key = key
        try:
            for server in (off, on):
                best_load(server, texts[:128], clients)
            results: dict[str, list[tuple[int, float]]] = {"off": [], "on": []}
            for _ in range(repeats):
                results["off"].append(best_load(off, texts, clients))
                results["on"].append(best_load(on, texts, clients))
            audit_lines = len((data / "audit.jsonl").read_text().splitlines())
            assert audit_lines >= len(texts), "the secured run must have written audit records"
        finally:
            off.stop()
            on.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for label, name in (("off", "security off"), ("on", "auth + Redis limits + audit")):
        tokens, seconds = min(results[label], key=lambda r: r[1])
        rows.append(Row(f"HTTP {clients} clients {dtype}, {name}", "sentences~50", tokens, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model directory (default: bundled MiniLM)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the corpus, one repeat")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--only-security",
        action="store_true",
        help="just the security on/off comparison (needs redis-server)",
    )
    parser.add_argument("--dtype", default=None, help="fast rows' dtype (default: see below)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    # the fast rows: bf16 where the CPU computes it natively; torch emulates it slower than
    # fp32 elsewhere (an AVX2 EPYC: 1 GFLOP/s against 88), so fp32 is the fast dtype there
    fast = args.dtype or fast_dtype()
    short = {"bfloat16": "bf16", "float32": "fp32"}.get(fast, fast)
    print(host_line())
    sys.setswitchinterval(0.001)  # as `embedgate serve` does, for the in-process async callers
    scale = 4 if args.quick else 1

    import torch

    default_threads = torch.get_num_threads()
    fp32 = load_engine(engine_config(Settings(model=args.model)))
    fp32.start()
    corpora = {
        "sentences~50": make_corpus(fp32, 2000 // scale, 50, seed=1),
        "passages~256": make_corpus(fp32, 200 // scale, 256, seed=2),
    }
    if args.only_security:
        fp32.stop()
        off, on = security_rows(args.model, fast, corpora["sentences~50"], args.clients, repeats)
        for r in (off, on):
            print(f"{r.name:60} {r.rate:10.0f} tokens/s")
        print(f"security on / off: {on.rate / off.rate:.3f}x (target >= 0.95)")
        return
    tokens = {name: count_tokens(fp32, texts) for name, texts in corpora.items()}
    for name, texts in corpora.items():
        print(
            f"corpus {name}: {len(texts)} texts, {tokens[name]} tokens, "
            f"mean {tokens[name] / len(texts):.1f}"
        )

    model_dir = resolve_model(args.model, None, []).path
    rows = baseline(model_dir, corpora, tokens, repeats, default_threads)
    r32, v32 = engine_rows(fp32, "embedgate engine fp32", corpora, tokens, repeats)
    fp32.stop()
    bf16 = load_engine(engine_config(Settings(model=args.model, dtype=fast)))
    bf16.start()
    r16, v16 = engine_rows(bf16, f"embedgate engine {short}", corpora, tokens, repeats)
    pattern = concurrent_rows(
        bf16,
        f"engine {short}, {args.clients} async callers",
        corpora,
        tokens,
        args.clients,
        repeats,
    )
    bf16.stop()
    rows += r32 + r16 + pattern
    cosine = min(float((v16[n] * v32[n]).sum(axis=1).min()) for n in corpora)
    security: list[Row] = []
    if not args.skip_http:
        rows += http_rows(args.model, fast, corpora, args.clients, repeats)
        rows += http_rows(args.model, fast, corpora, args.clients, repeats, False)
        security = security_rows(args.model, fast, corpora["sentences~50"], args.clients, repeats)

    base = {r.corpus: r.rate for r in rows if "baseline" in r.name}
    engine16 = {r.corpus: r.rate for r in r16}
    print(
        f"\n{'run':52} {'corpus':14} {'tokens/s':>10} {'x baseline':>11} {'x engine ' + short:>14}"
    )
    results = []
    for r in rows:
        vs_base = r.rate / base[r.corpus]
        vs_engine = r.rate / engine16[r.corpus]
        print(f"{r.name:52} {r.corpus:14} {r.rate:10.0f} {vs_base:10.2f}x {vs_engine:13.2f}x")
        results.append(
            {
                "run": r.name,
                "corpus": r.corpus,
                "tokens_per_s": round(r.rate, 1),
                "x_baseline": round(vs_base, 3),
                "x_engine_bf16": round(vs_engine, 3),
            }
        )
    print(f"\n{short} vs fp32: minimum cosine {cosine:.6f} (target >= 0.999)")
    if security:
        off, on = security
        print(f"security on / off (sentences): {on.rate / off.rate:.3f}x (target >= 0.95)")
        results.append({"run": "security on/off", "ratio": round(on.rate / off.rate, 3)})
    if args.json:
        args.json.write_text(json.dumps({"results": results, "bf16_min_cosine": cosine}, indent=2))


if __name__ == "__main__":
    main()
