"""The real backend: a Hugging Face model run with PyTorch (CPU or GPU, fp32 or bf16)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from embedgate.engine.backend import Backend
from embedgate.engine.model_spec import QWEN3_EOS_TOKEN, read_model_spec
from embedgate.engine.pooling import FloatArray, pool
from embedgate.engine.sequences import SequenceTemplate, find_template

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_TEMPLATE_PROBE = "hello world"


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA device is available")
    return torch.device(device)


class TorchBackend(Backend):
    """Tokenises with the model's fast tokenizer and pools the last hidden state."""

    def __init__(self, model: Any, tokenizer: Any, model_dir: Path, max_input_tokens: int | None):
        self._model = model
        self._tokenizer = tokenizer.backend_tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        model_max = getattr(tokenizer, "model_max_length", None)
        tokenizer_max = model_max if isinstance(model_max, int) and model_max < 10**7 else None
        self.spec = read_model_spec(model_dir, tokenizer_max)
        vocab_size = min(len(tokenizer), int(model.config.vocab_size))
        max_tokens = self.spec.max_tokens
        if max_input_tokens is not None:
            max_tokens = min(max_tokens, max_input_tokens)
        prefix, suffix = find_template(
            self._tokenizer.encode(_TEMPLATE_PROBE, add_special_tokens=True).ids,
            self._tokenizer.encode(_TEMPLATE_PROBE, add_special_tokens=False).ids,
        )
        eos: int | None = None
        if self.spec.family == "qwen3":
            eos = self._tokenizer.token_to_id(QWEN3_EOS_TOKEN)
            if eos is None:
                raise ValueError(f"Qwen3 tokenizer has no {QWEN3_EOS_TOKEN} token")
            if not suffix or suffix[-1] != eos:
                log.warning("tokenizer does not append %s; embedgate appends it", QWEN3_EOS_TOKEN)
        self.template = SequenceTemplate.for_model(prefix, suffix, vocab_size, max_tokens, eos)
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else (eos if eos is not None else 0))
        self._device = next(model.parameters()).device
        self.device_name = str(self._device)
        self.dtype_name = {v: k for k, v in _DTYPES.items()}[next(model.parameters()).dtype]

    @classmethod
    def load(
        cls,
        model_dir: Path,
        dtype: str = "float32",
        device: str = "auto",
        max_input_tokens: int | None = None,
    ) -> TorchBackend:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{model_dir} has no fast tokenizer (tokenizer.json)")
        # load in fp32 explicitly: bf16 checkpoints would otherwise stay bf16
        model = AutoModel.from_pretrained(
            str(model_dir), dtype=torch.float32, trust_remote_code=False
        )
        model = model.to(device=pick_device(device), dtype=_DTYPES[dtype]).eval()
        return cls(model, tokenizer, model_dir, max_input_tokens)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def collate(self, sequences: Sequence[Sequence[int]]) -> tuple[NDArray[Any], NDArray[Any]]:
        """Pad to the longest row on the model's side: (input_ids, attention_mask)."""
        longest = max(len(s) for s in sequences)
        ids = np.full((len(sequences), longest), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        left = self.spec.padding_side == "left"
        for row, seq in enumerate(sequences):
            span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
            ids[row, span] = seq
            mask[row, span] = 1
        return ids, mask

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        ids, mask = self.collate(sequences)
        input_ids = torch.from_numpy(ids).to(self._device)
        attention_mask = torch.from_numpy(mask).to(self._device)
        with torch.inference_mode():
            hidden = self._model(input_ids=input_ids, attention_mask=attention_mask)
            pooled = pool(hidden.last_hidden_state, attention_mask, self.spec.pooling)
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self._model = None
