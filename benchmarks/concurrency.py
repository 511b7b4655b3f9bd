"""Many clients with one input each, against bulk, with a native load generator (wrk).

    python benchmarks/concurrency.py [--seconds 15] [--connections 64]

A Python client saturates two cores before the server does, so the single-input load comes
from Debian's `wrk` (C): `--connections` keep-alive connections, each posting one short
sentence at a time to `/v1/embeddings`. Bulk: the same sentences 64 per request from four
Python clients (the server is the bottleneck there). Both against one `embedgate serve` with
default settings (auth on: a writer key), once with the small-pass runtime (the default) and
once with it off, so the ratio shows what short passes on ONNX Runtime do to throughput
under concurrency. Inputs per second, and single-input / bulk.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from common import PROSE_WORDS, HttpServer, host_line, start_http_server

LUA = """
local bodies = {}
local i = 0
for line in io.lines("%s") do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/v1/embeddings", nil, bodies[i])
end
"""


def sentences(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(PROSE_WORDS, k=rng.randint(6, 14))) for _ in range(n)]


def single_input_rate(
    server: HttpServer, texts: list[str], seconds: int, connections: int
) -> float:
    with tempfile.TemporaryDirectory() as work:
        bodies = Path(work) / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps({"input": t}) for t in texts) + "\n")
        script = Path(work) / "post.lua"
        script.write_text(LUA % (bodies, server.key))
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script),
             f"http://127.0.0.1:{server.port}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def bulk_rate(server: HttpServer, texts: list[str], seconds: int) -> float:
    done = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client() -> None:
        headers = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=headers) as http:
            while time.monotonic() < stop:
                batch = random.sample(texts, 64)
                http.post("/v1/embeddings", json={"input": batch}, timeout=120).raise_for_status()
                with lock:
                    done[0] += len(batch)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.monotonic() - started)


def writer_key(server: HttpServer, data_dir: Path) -> str:
    admin = (data_dir / "admin.key").read_text().strip()
    created = httpx.post(
        f"http://127.0.0.1:{server.port}/v1/admin/keys",
        json={"name": "bench", "role": "writer"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    created.raise_for_status()
    return str(created.json()["key"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    print(host_line())
    texts = sentences(2000)
    print("\n| small passes | single-input inputs/s (wrk) | bulk inputs/s | single / bulk |")
    print("|---|---:|---:|---:|")
    for runtime in ("auto", "off"):
        with tempfile.TemporaryDirectory() as work:
            env = {"EMBEDGATE_DATA_DIR": work, "EMBEDGATE_SMALL_PASS_RUNTIME": runtime}
            server = start_http_server(None, "float32", env)
            try:
                server.key = writer_key(server, Path(work))
                single_input_rate(server, texts, 3, args.connections)  # warm-up
                single = single_input_rate(server, texts, args.seconds, args.connections)
                bulk = bulk_rate(server, texts, args.seconds)
            finally:
                server.stop()
        print(f"| {runtime} | {single:,.0f} | {bulk:,.0f} | {single / bulk:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
