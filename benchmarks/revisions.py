"""HTTP throughput of two source trees on the same host, in alternating rounds.

A refactor claims "no change in speed"; this measures it: each round starts a server from the
old tree and one from the new (the same interpreter and packages, `PYTHONPATH` picks the
source), loads each with the same corpus from 64 concurrent clients, and stops it. Rounds
alternate the order so drift hits both alike; the best round of each is compared.

    git worktree add /tmp/old <commit>
    python benchmarks/revisions.py --old /tmp/old/src --rounds 3

The new tree is this checkout's `src`. Models, dtype and corpus as in throughput.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import host_line, start_http_server
from embedgate.config import Settings
from embedgate.engine import load_engine
from embedgate.services import engine_config
from support.engines import fast_dtype
from throughput import best_load, make_corpus

ROOT = Path(__file__).resolve().parent.parent


def measure(
    source: Path, model: str | None, dtype: str, corpora: dict[str, list[str]], clients: int
) -> dict[str, float]:
    env = {
        "EMBEDGATE_AUTH": "false",
        "EMBEDGATE_AUDIT": "false",
        "EMBEDGATE_DATA_DIR": tempfile.mkdtemp(prefix="embedgate-revisions-"),
        "PYTHONPATH": str(source),
    }
    server = start_http_server(model, dtype, env)
    try:
        rates = {}
        for name, texts in corpora.items():
            best_load(server, texts[:128], clients)  # warm-up
            tokens, seconds = best_load(server, texts, clients)
            rates[name] = tokens / seconds
        return rates
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True, help="the old tree's src directory")
    parser.add_argument("--new", type=Path, default=ROOT / "src")
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default=None, help="default: bf16 where native, else fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a quarter of the corpus")
    args = parser.parse_args()
    dtype = args.dtype or fast_dtype()
    scale = 4 if args.quick else 1
    print(host_line())
    engine = load_engine(engine_config(Settings(model=args.model)))
    engine.start()
    corpora = {
        "sentences~50": make_corpus(engine, 2000 // scale, 50, seed=1),
        "passages~256": make_corpus(engine, 200 // scale, 256, seed=2),
    }
    engine.stop()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    for round_ in range(args.rounds):
        order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
        for label in order:
            rates = measure(trees[label], args.model, dtype, corpora, args.clients)
            for name, rate in rates.items():
                best[label][name] = max(best[label].get(name, 0.0), rate)
            shown = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
            print(f"round {round_ + 1} {label}: {shown} tokens/s", flush=True)
    print(f"\nHTTP {args.clients} clients {dtype}, best of {args.rounds} rounds")
    print(f"{'corpus':14} {'old tok/s':>10} {'new tok/s':>10} {'new/old':>8}")
    for name in corpora:
        old, new = best["old"][name], best["new"][name]
        print(f"{name:14} {old:10,.0f} {new:10,.0f} {new / old:8.3f}")


if __name__ == "__main__":
    sys.setswitchinterval(0.001)
    main()
