"""What a model needs from the engine, read from its directory's config files.

Two families are recognised:

* Qwen3-Embedding (``model_type == "qwen3"``): last-token pooling, left padding,
  ``<|endoftext|>`` guaranteed at the end, queries formatted as
  ``"Instruct: {task}\\nQuery:{text}"``, documents plain, L2-normalised, Matryoshka 32..native.
* sentence-transformers models: pooling and normalisation from ``modules.json`` and
  ``1_Pooling/config.json``, prompts from ``config_sentence_transformers.json``, native size only.

Reading these facts is pure (files in, dataclass out) so it is tested without loading weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["last", "mean", "cls", "max"]
PaddingSide = Literal["left", "right"]

QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_EOS_TOKEN = "<|endoftext|>"
QWEN3_MIN_DIMENSIONS = 32


def qwen3_query(task: str, text: str) -> str:
    """The exact Qwen3-Embedding query format: one newline, no space after ``Query:``."""
    return f"Instruct: {task}\nQuery:{text}"


@dataclass(frozen=True)
class ModelSpec:
    """The model facts the engine applies; independent of torch."""

    family: Literal["qwen3", "sentence-transformers"]
    native_dimensions: int
    max_tokens: int
    pooling: Pooling
    normalize: bool
    padding_side: PaddingSide
    min_dimensions: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_task: str | None = None
    vocab_size: int | None = None  # the embedding table's rows: ids at or past it are invalid
    # languages the model was trained for, from its model card; () = multilingual or unknown
    languages: tuple[str, ...] = ()

    def covers(self, language: str) -> bool:
        """Whether text in `language` (an ISO 639-1 code) is in the model's coverage."""
        return not self.languages or language in self.languages

    @property
    def supports_matryoshka(self) -> bool:
        return self.min_dimensions < self.native_dimensions

    @property
    def takes_instructions(self) -> bool:
        return self.family == "qwen3"

    def apply_prompt(self, text: str, input_type: str | None, instruction: str | None) -> str:
        """Turn a raw input into the text the model sees (queries only get a prompt)."""
        if self.family == "qwen3":
            if input_type == "query" or (input_type is None and instruction is not None):
                return qwen3_query(instruction or self.default_task or QWEN3_DEFAULT_TASK, text)
            return text
        if input_type is not None:
            return self.prompts.get(input_type, "") + text
        return text


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else {"_list": data}


def card_languages(model_dir: Path) -> tuple[str, ...]:
    """The `language:` list of a Hugging Face model card's YAML front matter (README.md)."""
    card = model_dir / "README.md"
    if not card.is_file():
        return ()
    lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return ()
    found: list[str] = []
    inside = False
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith("language:"):
            value = line.split(":", 1)[1].strip()
            found.extend(v.strip(" '\"") for v in value.strip("[]").split(",") if v.strip())
            inside = not value
        elif inside and line.lstrip().startswith("- "):
            found.append(line.lstrip()[2:].strip(" '\""))
        elif inside and line and not line[0].isspace():
            inside = False
    return tuple(code.lower() for code in found if code)


def _pooling_from_st(model_dir: Path) -> tuple[Pooling, bool, bool]:
    """(pooling, normalize, found) from sentence-transformers' modules.json."""
    modules = _read_json(model_dir / "modules.json").get("_list", [])
    pooling: Pooling = "mean"
    normalize = False
    found = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            found = True
            cfg = _read_json(model_dir / str(module.get("path", "")) / "config.json")
            if cfg.get("pooling_mode_lasttoken"):
                pooling = "last"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                pooling = "max"
            else:
                pooling = "mean"
    return pooling, normalize, found


def read_model_spec(model_dir: Path, tokenizer_max_length: int | None = None) -> ModelSpec:
    """Derive the model's rules from its Hugging Face / sentence-transformers files."""
    config = _read_json(model_dir / "config.json")
    if not config:
        raise ValueError(f"{model_dir} has no config.json; is it a Hugging Face model directory?")
    model_type = str(config.get("model_type", ""))
    hidden = int(config.get("hidden_size", 0))
    if hidden <= 0:
        raise ValueError(f"{model_dir}/config.json has no hidden_size")
    positions = int(config.get("max_position_embeddings", 512))
    vocab = config.get("vocab_size")
    vocab_size = vocab if isinstance(vocab, int) and vocab > 0 else None
    st_config = _read_json(model_dir / "config_sentence_transformers.json")
    prompts = {str(k): str(v) for k, v in (st_config.get("prompts") or {}).items()}

    if model_type == "qwen3":
        query_prompt = prompts.get("query", "")
        task = QWEN3_DEFAULT_TASK
        if query_prompt.startswith("Instruct: ") and query_prompt.endswith("\nQuery:"):
            task = query_prompt[len("Instruct: ") : -len("\nQuery:")]
        return ModelSpec(
            family="qwen3",
            native_dimensions=hidden,
            max_tokens=positions,
            pooling="last",
            normalize=True,
            padding_side="left",
            min_dimensions=min(QWEN3_MIN_DIMENSIONS, hidden),
            prompts=prompts,
            default_task=task,
            vocab_size=vocab_size,
        )

    pooling, normalize, found = _pooling_from_st(model_dir)
    if not found:
        raise ValueError(
            f"{model_dir} is neither a Qwen3 model nor a sentence-transformers directory "
            "(no modules.json with a Pooling module); embedgate cannot know how to pool it"
        )
    max_tokens = positions
    if model_type in {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert"}:
        # absolute position tables: RoBERTa-style models reserve two positions for padding
        offset = 2 if model_type in {"roberta", "xlm-roberta"} else 0
        max_tokens = positions - offset
    if tokenizer_max_length is not None and 0 < tokenizer_max_length < max_tokens:
        max_tokens = tokenizer_max_length
    return ModelSpec(
        family="sentence-transformers",
        native_dimensions=hidden,
        max_tokens=max_tokens,
        pooling=pooling,
        normalize=normalize,
        padding_side="right",
        min_dimensions=hidden,
        prompts=prompts,
        vocab_size=vocab_size,
        languages=card_languages(model_dir),
    )
