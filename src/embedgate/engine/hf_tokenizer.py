"""The tokenizer side of a Hugging Face model directory: ids, template and padding.

Kept apart from the weights so the server process can tokenise and collate while the model
itself runs in another process (`process_backend.py`) or on threads here (`torch_backend.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedgate.engine.backend import Backend, TextOptions
from embedgate.engine.batching import padded_length
from embedgate.engine.model_spec import QWEN3_EOS_TOKEN, ModelSpec, read_model_spec
from embedgate.engine.sequences import SequenceTemplate, find_template

log = logging.getLogger(__name__)

_TEMPLATE_PROBE = "hello world"

IdArray = NDArray[np.int64]


class HFTokenizer:
    """A fast tokenizer plus what the model's rules say about sequences and padding."""

    def __init__(self, tokenizer: Any, model_dir: Path, options: TextOptions) -> None:
        self.pad_to_multiple_of = options.pad_to_multiple_of
        self._tokenizer = tokenizer.backend_tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        model_max = getattr(tokenizer, "model_max_length", None)
        tokenizer_max = model_max if isinstance(model_max, int) and model_max < 10**7 else None
        self.spec: ModelSpec = read_model_spec(model_dir, tokenizer_max)
        vocab_size = len(tokenizer)
        if self.spec.vocab_size is not None:
            vocab_size = min(vocab_size, self.spec.vocab_size)
        max_tokens = self.spec.max_tokens
        if options.max_input_tokens is not None:
            max_tokens = min(max_tokens, options.max_input_tokens)
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
        self.pad_id = int(pad if pad is not None else (eos if eos is not None else 0))

    @classmethod
    def load(cls, model_dir: Path, options: TextOptions) -> HFTokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{model_dir} has no fast tokenizer (tokenizer.json)")
        return cls(tokenizer, model_dir, options)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        # no offsets: we only need ids, and skipping them saves ~17% per text
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Content ids back to text (exact for byte-level BPE tokenizers such as Qwen's)."""
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=False))

    def pass_length(self, longest: int) -> int:
        """`longest` rounded up to `pad_to_multiple_of`, but never past the model's own limit
        (which is never past its position table)."""
        return max(
            longest, min(padded_length(longest, self.pad_to_multiple_of), self.spec.max_tokens)
        )

    def collate(self, sequences: Sequence[Sequence[int]]) -> tuple[IdArray, IdArray]:
        """Pad on the model's side to `pass_length`: (input_ids, attention_mask)."""
        longest = self.pass_length(max(len(s) for s in sequences))
        ids = np.full((len(sequences), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        left = self.spec.padding_side == "left"
        for row, seq in enumerate(sequences):
            span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
            ids[row, span] = seq
            mask[row, span] = 1
        return ids, mask


class TokenizedBackend(Backend):
    """The text side both PyTorch backends share; they differ in where the model runs."""

    def __init__(self, tokenizer: HFTokenizer, device_name: str, dtype_name: str) -> None:
        self.tokenizer = tokenizer
        self.spec = tokenizer.spec
        self.template = tokenizer.template
        self.device_name = device_name
        self.dtype_name = dtype_name

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.tokenize(texts)

    def pass_length(self, longest: int) -> int:
        return self.tokenizer.pass_length(longest)
