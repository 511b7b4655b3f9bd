"""The rerankers' reference implementations, as their authors publish them: what the parity
tests hold embedgate's scores to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.rerank_spec import (
    QWEN3_RERANK_PREFIX,
    QWEN3_RERANK_SUFFIX,
    qwen3_rerank_text,
)

QUERY = "How many days of annual leave do employees get?"
INSTRUCTION = "Given a question about company policy, find the passage that answers it"


class Qwen3Reference:
    """The Qwen3-Reranker model card's code, as published (fp32), loaded once."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(QWEN3_RERANK_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(QWEN3_RERANK_SUFFIX, add_special_tokens=False)

    def scores(
        self, pairs: Sequence[tuple[str, str]], instruction: str | None, max_length: int
    ) -> list[float]:
        import torch

        tokenizer, model = self.tokenizer, self.model
        prefix_tokens, suffix_tokens = self.prefix_tokens, self.suffix_tokens
        texts = [qwen3_rerank_text(instruction, q, d) for q, d in pairs]
        inputs = tokenizer(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        batch = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        with torch.no_grad():
            batch_scores = model(**batch).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            return [float(s) for s in batch_scores[:, 1].exp().tolist()]


def reference_qwen3_scores(
    model_dir: Path, pairs: Sequence[tuple[str, str]], instruction: str | None, max_length: int
) -> list[float]:
    return Qwen3Reference(model_dir).scores(pairs, instruction, max_length)


def reference_cross_encoder_scores(
    model_dir: Path, pairs: Sequence[tuple[str, str]]
) -> list[float]:
    """sentence-transformers' CrossEncoder.predict (sigmoid of the one logit)."""
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(str(model_dir), device="cpu").predict(list(pairs))
    return [float(s) for s in scores]
