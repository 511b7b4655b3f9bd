"""A reranker's weights and its score for a padded batch of pair sequences.

Qwen3-Reranker is a causal LM, but a score needs only two of its ~152k output rows: the
logits of "no" and "yes" at the last position. The base model runs as usual and a 2 x hidden
head (those two rows of `lm_head`, tied or not) replaces the full vocabulary projection;
softmax over [no, yes] then gives the same probability as the model card's code (tested to
1e-5 in tests/test_rerank_parity.py). Cross-encoders run their sequence-classification head;
one label is scored with a sigmoid, as sentence-transformers' CrossEncoder does, two with a
softmax taken at label 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedgate.engine.backend import WeightOptions
from embedgate.engine.backends.hf_tokenizer import IdArray
from embedgate.engine.backends.torch.model import DTYPES, pick_device
from embedgate.engine.pooling import FloatArray
from embedgate.engine.rerank_spec import RerankSpec


class TorchReranker:
    """A loaded reranker in eval mode: `forward` returns one score in [0, 1] per row."""

    def __init__(
        self,
        model: Any,
        spec: RerankSpec,
        head: torch.Tensor | None,
        separator: int | None = None,
    ) -> None:
        self._model = model
        self._spec = spec
        self._head = head  # Qwen3: the [no, yes] rows of lm_head
        self._separator = separator  # BERT-style segments: B follows the first of these
        parameter = next(model.parameters())
        self._device = parameter.device
        self.device_name = str(self._device)
        self.dtype_name = {v: k for k, v in DTYPES.items()}[parameter.dtype]

    @classmethod
    def load(
        cls,
        model_dir: Path,
        spec: RerankSpec,
        options: WeightOptions,
        *,
        yes_no: tuple[int, int] | None = None,
        separator: int | None = None,
    ) -> TorchReranker:
        """`yes_no`: the token ids of "yes" and "no" (Qwen3-Reranker); `separator`: the id
        that ends segment A, for models with segment embeddings (`PairTokenizer.separator`)."""
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        device = pick_device(options.device)
        dtype = DTYPES[options.dtype]
        head: torch.Tensor | None = None
        if spec.kind == "qwen3":
            if yes_no is None:
                raise ValueError("a Qwen3 reranker needs the ids of 'yes' and 'no'")
            if spec.labels != 1:
                raise ValueError("a Qwen3 reranker has one score")
            causal = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, trust_remote_code=False
            )
            yes, no = yes_no
            weight = causal.lm_head.weight  # tied to the input embeddings or not
            head = weight[[no, yes]].detach().clone().to(device=device, dtype=dtype)
            model = causal.model  # the decoder stack without the vocabulary projection
            del causal
        else:
            if spec.labels not in (1, 2):
                raise ValueError(
                    f"a cross-encoder with {spec.labels} labels: embedgate scores one label "
                    "(sigmoid) or two (softmax, label 1 relevant)"
                )
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), dtype=torch.float32, trust_remote_code=False
            )
        model = model.to(device=device, dtype=dtype).eval()
        if options.onednn and device.type == "cpu":
            from embedgate.engine.backends.torch.onednn import pack_linear_layers

            pack_linear_layers(model)
        return cls(model, spec, head, separator)

    def forward(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """Scores (n,) in float32 for a collated batch of pair sequences."""
        input_ids = torch.from_numpy(ids).to(self._device)
        attention_mask = torch.from_numpy(mask).to(self._device)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._separator is not None:
            inputs["token_type_ids"] = segment_b(input_ids, attention_mask, self._separator)
        with torch.inference_mode():
            if self._head is not None:  # left padding: the last position is every row's last
                last = self._model(**inputs).last_hidden_state[:, -1, :]
                no_yes = (last @ self._head.T).float()
                scores = torch.log_softmax(no_yes, dim=1)[:, 1].exp()
            else:
                logits = self._model(**inputs).logits.float()
                if logits.shape[1] == 1:
                    scores = torch.sigmoid(logits[:, 0])
                else:
                    scores = torch.softmax(logits, dim=1)[:, 1]
        return scores.cpu().numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self._model = None
        self._head = None


def segment_b(ids: torch.Tensor, mask: torch.Tensor, separator: int) -> torch.Tensor:
    """Token type ids of a pair batch: 1 after the first `separator` of each row, inside
    the mask (the pair template puts it between query and document); 0 elsewhere, padding
    included, as transformers' pair encoding sets them."""
    is_separator = (ids == separator) & (mask == 1)
    seen = torch.cumsum(is_separator.long(), dim=1)
    after_first = (seen > 1) | ((seen == 1) & ~is_separator)
    return (after_first & (mask == 1)).long()
