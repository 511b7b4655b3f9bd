"""Steady state under mixed input lengths: `pad_to_multiple_of` 16 (default) vs 1 (exact).

Real traffic does not come in one length. On a CPU every new (rows x length) shape of a Linear
layer makes oneDNN compile a kernel, so exact-length passes keep paying for new shapes long
after start-up. This runs the same stream of single-input requests with random lengths through
one engine per `--multiples` value in turn (bf16 unless `--dtype`, the model in its own
process, `--clients` concurrent asyncio callers), round after round, and prints tokens/s per
round, the steady-state ratios and the model process's memory at the end. `--http` sends the
stream to one `embedgate serve` per value instead (same client as `throughput.py`):

    python benchmarks/mixed_lengths.py              # bundled all-MiniLM-L6-v2
    python benchmarks/mixed_lengths.py --rounds 12 --requests 1500
    python benchmarks/mixed_lengths.py --http
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from common import PROSE_WORDS, model_process_rss_mib, rss_mib, start_http_server
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, EmbedRequest, load_engine
from embedgate.services import engine_config
from throughput import best_load


def rounds_of_texts(
    rounds: int, requests: int, shortest: int, longest: int, seed: int
) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [
            " ".join(rng.choice(PROSE_WORDS) for _ in range(rng.randint(shortest, longest)))
            for _ in range(requests)
        ]
        for _ in range(rounds)
    ]


async def one_round(engine: EmbeddingEngine, texts: list[str], clients: int) -> float:
    index = 0

    async def client() -> None:
        nonlocal index
        while index < len(texts):
            text = texts[index]
            index += 1
            await engine.embed(EmbedRequest([text]))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start


def run(
    multiple: int, stream: list[list[str]], clients: int, model: str | None, dtype: str
) -> tuple[list[float], float | None]:
    settings = Settings(model=model, dtype=dtype, pad_to_multiple_of=multiple)  # type: ignore[arg-type]
    engine = load_engine(engine_config(settings))
    engine.start()
    try:
        rates = []
        for texts in stream:
            tokens = sum(len(s) for s in engine.tokenize(EmbedRequest(texts)))
            rates.append(tokens / asyncio.run(one_round(engine, texts, clients)))
            print(f"  pad_to_multiple_of={multiple:<3} {rates[-1]:9.0f} tokens/s", flush=True)
        pid = engine.health().model_pid
        return rates, rss_mib(pid) if pid is not None else None
    finally:
        engine.stop()


def run_http(
    multiple: int, stream: list[list[str]], clients: int, model: str | None, dtype: str
) -> tuple[list[float], float | None]:
    env = {
        "EMBEDGATE_AUTH": "false",
        "EMBEDGATE_AUDIT": "false",
        "EMBEDGATE_PAD_TO_MULTIPLE_OF": str(multiple),
    }
    server = start_http_server(model, dtype, env)
    try:
        rates = []
        for texts in stream:
            tokens, seconds = best_load(server, texts, clients)
            rates.append(tokens / seconds)
            print(f"  HTTP pad_to_multiple_of={multiple:<3} {rates[-1]:9.0f} tokens/s", flush=True)
        return rates, model_process_rss_mib(server.process.pid)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model directory (default: bundled MiniLM)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--http", action="store_true", help="through `embedgate serve`")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1200, help="requests per round")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--shortest", type=int, default=4, help="words in the shortest input")
    parser.add_argument("--longest", type=int, default=150, help="words in the longest input")
    parser.add_argument(
        "--multiples", type=int, nargs="+", default=[1, 16], help="values to compare; first = base"
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.001)  # as `embedgate serve` does
    stream = rounds_of_texts(args.rounds, args.requests, args.shortest, args.longest, seed=3)
    runner = run_http if args.http else run
    results = {m: runner(m, stream, args.clients, args.model, args.dtype) for m in args.multiples}
    steady = {m: statistics.median(rates[len(rates) // 2 :]) for m, (rates, _) in results.items()}
    print(f"\n{'pad_to_multiple_of':20} {'first round':>12} {'steady tok/s':>13} {'model RSS':>10}")
    for m, (rates, rss) in results.items():
        memory = f"{rss:7.0f} MiB" if rss is not None else "n/a"
        print(f"{m:<20} {rates[0]:12.0f} {steady[m]:13.0f} {memory:>10}")
    base = args.multiples[0]
    for m in args.multiples[1:]:
        print(f"steady state, {m} / {base}: {steady[m] / steady[base]:.2f}x")


if __name__ == "__main__":
    main()
