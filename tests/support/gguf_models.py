"""GGUF files written at test time with `gguf.GGUFWriter`, from the Hugging Face directories
the parity tests already build: Qwen3 (the real Qwen vocabulary as tokenizer metadata,
`pre = qwen2`) and BERT (MiniLM). The same writer makes the benchmark's 0.6B-shaped files.

Tensor names and metadata follow llama.cpp's `convert_hf_to_gguf.py`; Qwen3 uses NEOX rope, as
Hugging Face does, so Q and K are written as they are (no permutation)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

QWEN3_NAMES = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
KINDS = ("F32", "F16", "Q8_0", "Q4_1", "Q4_0")


def _types(kind: str) -> tuple[Any, Any]:
    """(the tensors' ggml type, the file type) of a format name."""
    import gguf

    tensor = getattr(gguf.GGMLQuantizationType, kind)
    file_type = (
        gguf.LlamaFileType.ALL_F32
        if kind == "F32"
        else getattr(gguf.LlamaFileType, f"MOSTLY_{kind}")
    )
    return tensor, file_type


def _add(writer: Any, name: str, data: np.ndarray, kind: str) -> None:
    """Matrices in the file's type; vectors (norms, biases) stay F32, as llama.cpp expects."""
    import gguf

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim < 2 or kind == "F32":
        writer.add_tensor(name, data)
    elif kind == "F16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = _types(kind)[0]
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _bpe_vocabulary(
    model_dir: Path, rows: int
) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    by_id: dict[int, tuple[str, int]] = {
        i: (tok, gguf.TokenType.NORMAL) for tok, i in vocab.items()
    }
    for content, token in added.items():
        kind = gguf.TokenType.CONTROL if token.get("special") else gguf.TokenType.USER_DEFINED
        by_id[token["id"]] = (content, kind)
    size = max(rows, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))[0] for i in range(size)]
    types = [int(by_id.get(i, ("", gguf.TokenType.UNUSED))[1]) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    ids = {content: token["id"] for content, token in added.items()}
    return tokens, types, merges, ids


def _safetensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor as float32 numpy (bf16 checkpoints included, hence torch's loader)."""
    from safetensors.torch import load_file

    out: dict[str, np.ndarray] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, value in load_file(str(path)).items():
            out[re.sub(r"^model\.", "", name)] = value.float().numpy()
    return out


def write_qwen3_gguf(
    model_dir: Path,
    out: Path,
    kind: str = "F32",
    *,
    add_eos: bool = True,
    architecture: str = "qwen3",
    pooling: str = "last",
) -> Path:
    """A Qwen3 embedding GGUF from a Hugging Face Qwen3 directory. `add_eos=False` writes a
    file like the early Qwen3 GGUFs, whose metadata does not add <|endoftext|>."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    tensors = _safetensors(model_dir)
    embed = tensors["embed_tokens.weight"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 1e6)
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_name(model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_pooling_type(
        {
            "last": gguf.PoolingType.LAST,
            "mean": gguf.PoolingType.MEAN,
            "none": gguf.PoolingType.NONE,
        }[pooling]
    )
    writer.add_file_type(_types(kind)[1])
    tokens, types, merges, special = _bpe_vocabulary(model_dir, embed.shape[0])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = special.get("<|endoftext|>", len(tokens) - 1)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(eos)
    writer.add_bos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(add_eos)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, value in tensors.items():
        layer = re.match(r"layers\.(\d+)\.(.+)$", name)
        if layer:
            target = f"blk.{layer.group(1)}.{QWEN3_NAMES[layer.group(2)]}"
        else:
            target = QWEN3_NAMES[name]
        # as llama.cpp's Q4 mixes do, the token table keeps more bits than the 4-bit layers
        _add(
            writer,
            target,
            value,
            "Q8_0" if kind.startswith("Q4") and target == "token_embd.weight" else kind,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def quantize_with_llama_cpp(source: Path, out: Path, kind: str = "Q4_K_M") -> Path:
    """K-quants (what Qwen publishes) by llama.cpp's own quantizer, through llama-cpp-python's
    binding of `llama_model_quantize`: the `gguf` package cannot write them."""
    import llama_cpp

    llama_cpp._logger.set_verbose(False)  # its per-tensor progress: errors only
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.nthread = 2
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if code != 0:
        raise RuntimeError(f"llama_model_quantize returned {code}")
    return out
