"""Gateway mode's cost: 64 clients through an embedgate gateway vs straight to its upstream.

    python benchmarks/gateway.py [--seconds 20] [--clients 64] [--kind passages|sentences]

One upstream (`embedgate serve`, bundled MiniLM, auth off, loopback) and one gateway in front
of it (auth on: every request is authenticated, limited and audited). The same clients run
against the upstream directly, then through the gateway. It prints requests/s both ways,
the ratio, and the gateway process's CPU per request in core-milliseconds: on this 2-core
machine gateway and upstream share the cores, so the ratio understates a real deployment,
and the core-ms per request is the figure that transfers (one gateway core serves
1000 / core-ms requests per second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import WORDS_EN, start_serve, wait_served


def start(data_dir: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    served = start_serve(data_dir, *args, **env)
    wait_served(served)
    return served.process, served.base


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def load(
    base: str, headers: dict[str, str], texts: list[str], clients: int, seconds: float
) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal done
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            while time.monotonic() < stop:
                r = await http.post("/v1/embeddings", json={"input": rng.choice(texts)})
                r.raise_for_status()
                done += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--kind", choices=["passages", "sentences"], default="passages")
    args = parser.parse_args()
    rng = random.Random(1)
    length = 150 if args.kind == "passages" else 12
    texts = [" ".join(rng.choices(WORDS_EN, k=length)) for _ in range(256)]
    work = Path(tempfile.mkdtemp(prefix="embedgate-gateway-"))
    upstream, up_base = start(work / "up", EMBEDGATE_AUTH="false")
    gateway = None
    try:
        # no --model: the bundled MiniLM's tokenizer, the upstream's model
        gateway, gw_base = start(work / "gw", "--upstream", up_base)
        key = (work / "gw" / "admin.key").read_text().strip()
        warm = {"Authorization": f"Bearer {key}"}
        asyncio.run(load(up_base, {}, texts, 4, 2))
        asyncio.run(load(gw_base, warm, texts, 4, 2))
        direct = asyncio.run(load(up_base, {}, texts, args.clients, args.seconds))
        before = cpu_seconds(gateway.pid)
        through = asyncio.run(load(gw_base, warm, texts, args.clients, args.seconds))
        gateway_cpu = cpu_seconds(gateway.pid) - before
    finally:
        for process in (gateway, upstream):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    print(f"{args.clients} clients, {args.kind} (~{length} words), {args.seconds:.0f} s each way")
    print(f"direct to the upstream: {direct / args.seconds:.1f} requests/s")
    print(f"through the gateway:    {through / args.seconds:.1f} requests/s")
    print(f"ratio: {through / max(direct, 1):.2f}x (target >= 0.9x on passages)")
    print(f"gateway CPU: {1000 * gateway_cpu / max(through, 1):.2f} core-ms per request")


if __name__ == "__main__":
    main()
