"""Our tokenizer.json reader against transformers' AutoTokenizer, id for id.

The server process tokenises without transformers (it would import torch into a gateway or
a process that only feeds a model process); these tests hold the shortcut to the original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedgate.engine.backends.tokenizer_files import read_tokenizer_files

TEXTS = [
    "Hello, world!",
    "A man is eating food.",
    "Das ist ein deutscher Satz mit Ümläuten und Akzenten: café, naïve.",
    "今天天气很好。東京は晴れです。",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "<|endoftext|> [SEP] [CLS] special-looking text",
    "emoji 🚀🔥 and math ∑∫ and code `x = f(y)`",
    "UPPER lower MiXeD",
    "",
    "word " * 300,
]


def _compare(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(model_dir))
    ours = read_tokenizer_files(model_dir)
    for text in TEXTS:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours.tokenizer.encode(text, add_special_tokens=False).ids == expected, text
        with_special = reference(text, add_special_tokens=True)["input_ids"]
        assert ours.tokenizer.encode(text, add_special_tokens=True).ids == with_special, text
    assert ours.pad_token_id == reference.pad_token_id
    assert ours.tokenizer.get_vocab_size(with_added_tokens=True) == len(reference)
    expected_max = reference.model_max_length if reference.model_max_length < 10**7 else None
    assert ours.model_max_length == expected_max


def test_minilm_matches_autotokenizer(minilm_dir: Path) -> None:
    _compare(minilm_dir)


def test_qwen_vocabulary_matches_autotokenizer(qwen_vocab_dir: Path) -> None:
    _compare(qwen_vocab_dir)


def test_config_casing_overrides_tokenizer_json(minilm_dir: Path, tmp_path: Path) -> None:
    """A cased BERT config (do_lower_case false) wins over tokenizer.json's lowercasing, as
    in transformers."""
    model = tmp_path / "cased"
    shutil.copytree(minilm_dir, model)
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["do_lower_case"] = False
    config_path.write_text(json.dumps(config))
    ours = read_tokenizer_files(model)
    upper = ours.tokenizer.encode("UPPER", add_special_tokens=False).ids
    lower = ours.tokenizer.encode("upper", add_special_tokens=False).ids
    assert upper != lower
    _compare(model)


def test_a_directory_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        read_tokenizer_files(tmp_path)
