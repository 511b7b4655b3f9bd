"""GGUF through llama.cpp against the torch backend, on the Qwen3-Embedding-0.6B shape with
random weights (speed and memory do not depend on weight values), in one run:

    python benchmarks/gguf.py [--shapes /tmp/qwen3-0.6b-shapes] [--quick]

Writes the 0.6B-shaped model as GGUF F16, Q8_0 and Q4_1 with the tests' writer
(tests/support/gguf_models.py) and Q4_K_M with llama.cpp's own quantizer, then runs the same
embedgate engine in a fresh process for torch fp32, torch bf16 and each GGUF file: tokens/s
for short sentences and for ~150-word passages, and the process's peak RSS. Also sweeps
llama.cpp's decode size (`EMBEDGATE_GGUF_GROUP_TOKENS`) on Q8_0 and a smaller input limit.
Ratios are against torch fp32 measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from host import host_line  # noqa: E402
from qwen3_shapes import build  # noqa: E402
from vocabulary import WORDS_EN  # noqa: E402

# this file is named like the `gguf` package: take its folder off the path before importing it
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from support.gguf_models import quantize_with_llama_cpp, write_qwen3_gguf  # noqa: E402

CHILD = """
import json, resource, sys, time
from embedgate.engine import EngineConfig, EmbedRequest, load_engine
model, dtype, group, limit, sentences, passages = sys.argv[1:7]
config = EngineConfig(model=model, dtype=dtype, model_process=False, forward_threads=None,
                      gguf_group_tokens=int(group) or None, max_input_tokens=int(limit) or None)
engine = load_engine(config)
engine.start()
texts = {"sentences": json.loads(sentences), "passages": json.loads(passages)}
engine.embed_sync(EmbedRequest(texts["sentences"][:8]))  # warm-up
out = {}
for name, batch in texts.items():
    started = time.perf_counter()
    tokens = 0
    for i in range(0, len(batch), 32):
        tokens += engine.embed_sync(EmbedRequest(batch[i:i + 32])).prompt_tokens
    out[name] = tokens / (time.perf_counter() - started)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
engine.stop()
print(json.dumps(out))
"""


def _text(seed: int, words: int) -> str:
    """Plain English-like text of `words` words, different for every seed."""
    n = len(WORDS_EN)
    return " ".join(WORDS_EN[(seed * 7 + i * (seed % 5 + 1)) % n] for i in range(words)) + "."


def run(
    model: Path, dtype: str, group: int, limit: int, sentences: list[str], passages: list[str]
) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(model),
            dtype,
            str(group),
            str(limit),
            json.dumps(sentences),
            json.dumps(passages),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", type=Path, default=Path("/tmp/qwen3-0.6b-shapes"))
    parser.add_argument("--quick", action="store_true", help="fewer texts")
    args = parser.parse_args()
    if not (args.shapes / "config.json").exists():
        build(args.shapes)
    files = {}
    for kind in ("F16", "Q8_0", "Q4_1"):
        path = args.shapes.parent / f"{args.shapes.name}-{kind}.gguf"
        if not path.exists():
            started = time.perf_counter()
            write_qwen3_gguf(args.shapes, path, kind)
            print(f"wrote {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
        files[kind] = path
    k_quant = args.shapes.parent / f"{args.shapes.name}-Q4_K_M.gguf"
    if not k_quant.exists():  # what Qwen publishes, made by llama.cpp's own quantizer
        quantize_with_llama_cpp(files["F16"], k_quant, "Q4_K_M")
    files["Q4_K_M"] = k_quant
    n_sentences, n_passages = (64, 8) if args.quick else (128, 16)
    sentences = [_text(i, 12) for i in range(n_sentences)]
    passages = [_text(i, 150) for i in range(n_passages)]
    print(host_line(), flush=True)
    print(f"date: {time.strftime('%Y-%m-%d')}; {n_sentences} sentences, {n_passages} passages")
    rows = [  # name, model, dtype, decode tokens, max input tokens (0: default)
        ("torch fp32", args.shapes, "float32", 0, 0),
        ("torch bf16", args.shapes, "bfloat16", 0, 0),
        *[(f"GGUF {kind}", path, "float32", 0, 0) for kind, path in files.items()],
        ("GGUF Q4_1 max 2048 tok", files["Q4_1"], "float32", 0, 2048),
        *[(f"GGUF Q8_0 decode {g}", files["Q8_0"], "float32", g, 0) for g in (128, 2048)],
    ]
    sizes = {"torch fp32": sum(p.stat().st_size for p in args.shapes.glob("*.safetensors")) * 2}
    sizes["torch bf16"] = sizes["torch fp32"] // 2
    for kind, path in files.items():
        sizes[f"GGUF {kind}"] = path.stat().st_size
    baseline = None
    print(
        f"{'backend':<24}{'sentences tok/s':>16}{'passages tok/s':>16}{'x fp32':>8}"
        f"{'peak RSS MB':>13}{'file MB':>9}"
    )
    for name, model, dtype, group, limit in rows:
        result = run(model, dtype, group, limit, sentences, passages)
        baseline = baseline or result
        ratio = result["passages"] / baseline["passages"]
        size = sizes.get(name)
        print(
            f"{name:<24}{result['sentences']:>16.0f}{result['passages']:>16.0f}{ratio:>8.2f}"
            f"{result['peak_rss_mb']:>13.0f}{(size or 0) / 2**20:>9.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
