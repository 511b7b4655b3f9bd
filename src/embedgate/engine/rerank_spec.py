"""What a reranker model is and how its authors score a (query, document) pair.

Two kinds, told apart from the model directory (`read_rerank_spec`):

- Qwen3-Reranker: a causal LM judging "yes" or "no". The pair becomes one text,
  `<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}`, tokenised without
  special tokens, cut to fit, and wrapped in a fixed chat prefix and suffix; left padding; the
  score is softmax([no, yes])[yes] of the LM logits at the last position. Its config names
  the same architecture as the embedding models (`Qwen3ForCausalLM`), so the model's name or
  an explicit task says it is a reranker.
- Cross-encoders (`*ForSequenceClassification`: BERT, MiniLM, XLM-R rerankers): the tokenizer's
  pair encoding, longest-first truncation, and sigmoid of the one logit, as
  sentence-transformers' `CrossEncoder.predict` scores it.

Facts: ../shared/docs/qwen3-reranker.md and the model cards. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from embedgate.engine.model_spec import QWEN3_DEFAULT_TASK

QWEN3_RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANK_MAX_TOKENS = 8192  # the model card's max_length for the whole sequence

RerankKind = Literal["qwen3", "cross-encoder"]


def qwen3_rerank_text(instruction: str | None, query: str, document: str) -> str:
    """The model card's `format_instruction`, exactly."""
    task = instruction if instruction is not None else QWEN3_DEFAULT_TASK
    return f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {document}"


@dataclass(frozen=True)
class RerankSpec:
    """The facts the rerank path applies to one model."""

    kind: RerankKind
    max_tokens: int  # the longest sequence the model is given, special tokens included
    padding_side: Literal["left", "right"]
    labels: int = 1  # cross-encoders: the classifier's outputs (1: sigmoid of the logit)
    token_types: bool = False  # cross-encoders with segment embeddings (BERT): A=0, B=1

    @property
    def takes_instructions(self) -> bool:
        return self.kind == "qwen3"


def is_reranker_name(name: str) -> bool:
    """Qwen3-Reranker cannot be told from its config; its name says it."""
    return "reranker" in name.lower()


def read_rerank_spec(
    model_dir: Path, *, name: str | None = None, told: bool = False
) -> RerankSpec | None:
    """The reranker spec of `model_dir`, or None when it is not a reranker (an embedding
    model). `name` (the model's served name or hub id) identifies a Qwen3-Reranker, as does
    `told` (the operator set task = rerank)."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} has no config.json; is it a Hugging Face model directory?")
    config = json.loads(path.read_text(encoding="utf-8"))
    architectures = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", ""))
    positions = int(config.get("max_position_embeddings", 512))
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        offset = 2 if model_type in {"roberta", "xlm-roberta"} else 0
        labels = int(config.get("num_labels") or len(config.get("id2label") or {}) or 1)
        return RerankSpec(
            kind="cross-encoder",
            max_tokens=positions - offset,
            padding_side="right",
            labels=labels,
            token_types=int(config.get("type_vocab_size", 0)) >= 2,
        )
    if model_type == "qwen3" and (told or is_reranker_name(name or model_dir.name)):
        return RerankSpec(
            kind="qwen3",
            max_tokens=min(positions, QWEN3_RERANK_MAX_TOKENS),
            padding_side="left",
        )
    return None
