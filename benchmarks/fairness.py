"""Small requests while other keys send huge batches: latency with and without the batches.

Starts `embedgate serve` (bundled MiniLM, bf16) on a free loopback port, makes keys, then:
1. unloaded: `--small-clients` concurrent clients send single short inputs for `--seconds`;
2. loaded: the same, while `--big-clients` other keys each send one request of 2,048 long
   inputs (~150 tokens each), again and again until the time is up.
Prints small-request p50/p95/max, how many small requests finished, how many 429s, and the
big requests' throughput. The fair queue (embedgate/engine/fair_queue.py) serves keys in turn:
without it a small request waited behind every queued big input.

    .venv/bin/python benchmarks/fairness.py [--small-clients 50] [--big-clients 2] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import free_port, host_line

WORDS = [
    "policy",
    "travel",
    "invoice",
    "network",
    "backup",
    "review",
    "budget",
    "contract",
    "supplier",
    "quality",
]


def long_text(i: int) -> str:
    return f"Document {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(140))


async def small_client(
    client: httpx.AsyncClient, until: float, out: list[float], refused: list[int]
) -> None:
    i = 0
    while time.monotonic() < until:
        started = time.monotonic()
        reply = await client.post("/v1/embeddings", json={"input": f"short question {i}"})
        if reply.status_code == 200:
            out.append(time.monotonic() - started)
        else:
            refused.append(reply.status_code)
            await asyncio.sleep(0.1)
        i += 1


async def big_client(
    client: httpx.AsyncClient, until: float, done: list[tuple[int, float]]
) -> None:
    texts = [long_text(i) for i in range(2048)]
    while time.monotonic() < until:
        started = time.monotonic()
        reply = await client.post("/v1/embeddings", json={"input": texts}, timeout=900)
        if reply.status_code == 200:
            done.append((reply.json()["usage"]["prompt_tokens"], time.monotonic() - started))
        else:
            await asyncio.sleep(1)


async def phase(
    base: str, keys: dict[str, str], args: argparse.Namespace, big: int
) -> tuple[float, float]:
    until = time.monotonic() + args.seconds
    latencies: list[float] = []
    refused: list[int] = []
    bigs: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=args.small_clients + big + 4)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {keys['small']}"},
        timeout=300,
        limits=limits,
    ) as small:
        big_clients = [
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {keys[f'big{n}']}"})
            for n in range(big)
        ]
        tasks = [small_client(small, until, latencies, refused) for _ in range(args.small_clients)]
        tasks += [big_client(c, until, bigs) for c in big_clients]
        await asyncio.gather(*tasks)
        for c in big_clients:
            await c.aclose()
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
    label = f"with {big} big-batch key(s)" if big else "unloaded"
    print(
        f"{label:26} small requests: {len(latencies):6d} done, "
        f"p50 {statistics.median(latencies) * 1000:7.0f} ms, p95 {q[-1] * 1000:7.0f} ms, "
        f"max {max(latencies) * 1000:7.0f} ms, {len(refused)} refused"
    )
    if bigs:
        tokens = sum(t for t, _ in bigs)
        print(
            f"{'':26} big requests: {len(bigs)} done, {tokens / args.seconds:,.0f} tokens/s of them"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-clients", type=int, default=50)
    parser.add_argument("--big-clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(host_line())
    data = Path(tempfile.mkdtemp(prefix="embedgate-fairness-"))
    port = free_port()
    env = {
        **os.environ,
        "EMBEDGATE_DATA_DIR": str(data),
        "EMBEDGATE_LOG_LEVEL": "warning",
        "EMBEDGATE_DTYPE": "bfloat16",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server never became ready")
            time.sleep(0.2)
        admin = {"Authorization": f"Bearer {(data / 'admin.key').read_text().strip()}"}
        keys = {}
        for name in ["small", *(f"big{n}" for n in range(args.big_clients))]:
            made = httpx.post(
                base + "/v1/admin/keys", json={"name": name, "role": "writer"}, headers=admin
            )
            keys[name] = made.json()["key"]
        p50, p95 = asyncio.run(phase(base, keys, args, 0))
        loaded50, loaded95 = asyncio.run(phase(base, keys, args, args.big_clients))
        print(f"loaded / unloaded: p50 {loaded50 / p50:.2f}x, p95 {loaded95 / p95:.2f}x")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
