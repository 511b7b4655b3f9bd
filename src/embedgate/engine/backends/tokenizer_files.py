"""A model directory's fast tokenizer, read the way transformers' `AutoTokenizer` reads it.

`tokenizer.json` holds the whole pipeline (normaliser, pre-tokeniser, model, post-processor);
`tokenizer_config.json` and `special_tokens_map.json` add a few facts on top: the padding
token, the longest input, tokens added after training, and for BERT-style normalisers the
casing flags, which transformers applies over what `tokenizer.json` says. Reading them here
keeps transformers (and the torch it imports) out of every process that only tokenises: the
server in front of a model process, gateway mode. `tests/test_tokenizer_files.py` holds the
result to `AutoTokenizer` id for id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, normalizers

# transformers' placeholder for "no limit" is 1e30; anything this large means none
_NO_LIMIT = 10**7


@dataclass
class TokenizerFiles:
    """The tokenizer and the facts from its config files that the template and padding need."""

    tokenizer: Tokenizer
    pad_token_id: int | None
    model_max_length: int | None  # None: the config sets no usable limit


def read_tokenizer_files(model_dir: Path) -> TokenizerFiles:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} has no fast tokenizer (tokenizer.json)")
    tokenizer = Tokenizer.from_file(str(path))
    # a saved tokenizer may carry the padding and truncation of its last use; like
    # transformers we pad and truncate ourselves, per request
    tokenizer.no_padding()
    tokenizer.no_truncation()
    config = _read_json(model_dir / "tokenizer_config.json")
    special = _read_json(model_dir / "special_tokens_map.json")
    _add_missing_tokens(tokenizer, config.get("added_tokens_decoder") or {})
    _sync_bert_normalizer(tokenizer, config)
    pad = _token_text(config.get("pad_token", special.get("pad_token")))
    model_max = config.get("model_max_length")
    return TokenizerFiles(
        tokenizer=tokenizer,
        pad_token_id=tokenizer.token_to_id(pad) if pad is not None else None,
        model_max_length=(
            int(model_max)
            if isinstance(model_max, int | float) and 0 < model_max < _NO_LIMIT
            else None
        ),
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_text(entry: Any) -> str | None:
    """A special token as the config writes it: a string, or an AddedToken record."""
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def _add_missing_tokens(tokenizer: Tokenizer, decoder: dict[str, Any]) -> None:
    """Tokens the config lists (by id) that tokenizer.json lacks, added as transformers does."""
    for _, entry in sorted(decoder.items(), key=lambda item: int(item[0])):
        if (
            not isinstance(entry, dict)
            or tokenizer.token_to_id(entry.get("content", "")) is not None
        ):
            continue
        token = AddedToken(
            entry["content"],
            single_word=bool(entry.get("single_word", False)),
            lstrip=bool(entry.get("lstrip", False)),
            rstrip=bool(entry.get("rstrip", False)),
            normalized=bool(entry.get("normalized", not entry.get("special", False))),
            special=bool(entry.get("special", False)),
        )
        if token.special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])


def _sync_bert_normalizer(tokenizer: Tokenizer, config: dict[str, Any]) -> None:
    """BERT-style tokenizers (BERT, DistilBERT, MPNet, ELECTRA...) take their casing from the
    config, over tokenizer.json, with transformers' defaults where the config is silent."""
    normalizer = tokenizer.normalizer
    if normalizer is None:
        return
    state = json.loads(normalizer.__getstate__())
    if state.get("type") != "BertNormalizer":
        return
    wanted = {
        "lowercase": config.get("do_lower_case", True),
        "strip_accents": config.get("strip_accents"),
        "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
    }
    if all(state.get(key, value) == value for key, value in wanted.items()):
        return
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=state.get("clean_text", True), **wanted
    )
