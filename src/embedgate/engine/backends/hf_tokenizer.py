"""The tokenizer side of a Hugging Face model directory: ids, template and padding.

Kept apart from the weights so the server process can tokenise and collate while the model
itself runs in another process or upstream (gateway mode). It reads `tokenizer.json` with the
`tokenizers` library and the few facts transformers' `AutoTokenizer` adds from
`tokenizer_config.json` (`tokenizer_files.py`), so a server that only tokenises never imports
transformers or torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from embedgate.engine.backend import Backend, BackendDescription, TextOptions
from embedgate.engine.backends.tokenizer_files import TokenizerFiles, read_tokenizer_files
from embedgate.engine.batching import padded_length
from embedgate.engine.model_spec import QWEN3_EOS_TOKEN, ModelSpec, read_model_spec
from embedgate.engine.sequences import SequenceTemplate, find_template

log = logging.getLogger(__name__)

_TEMPLATE_PROBE = "hello world"

IdArray = NDArray[np.int64]


class HFTokenizer:
    """A fast tokenizer plus what the model's rules say about sequences and padding."""

    def __init__(self, files: TokenizerFiles, model_dir: Path, options: TextOptions) -> None:
        self.pad_to_multiple_of = options.pad_to_multiple_of
        self._tokenizer = files.tokenizer
        self.spec: ModelSpec = read_model_spec(model_dir, files.model_max_length)
        vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
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
        pad = files.pad_token_id
        self.pad_id = int(pad if pad is not None else (eos if eos is not None else 0))

    @classmethod
    def load(cls, model_dir: Path, options: TextOptions) -> HFTokenizer:
        return cls(read_tokenizer_files(model_dir), model_dir, options)

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
        return self.collate_to(sequences, self.pass_length(max(len(s) for s in sequences)))

    def collate_to(
        self, sequences: Sequence[Sequence[int]], longest: int
    ) -> tuple[IdArray, IdArray]:
        """Pad on the model's side to exactly `longest` tokens."""
        ids = np.full((len(sequences), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        left = self.spec.padding_side == "left"
        for row, seq in enumerate(sequences):
            span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
            ids[row, span] = seq
            mask[row, span] = 1
        return ids, mask


class TokenizedBackend(Backend):
    """The text side the PyTorch backends and the gateway share; they differ in where the
    model runs, which `description` says."""

    def __init__(self, tokenizer: HFTokenizer, description: BackendDescription) -> None:
        self.tokenizer = tokenizer
        self.spec = tokenizer.spec
        self.template = tokenizer.template
        self.description = description

    def describe(self) -> BackendDescription:
        return self.description

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.tokenize(texts)

    def pass_length(self, longest: int) -> int:
        return self.tokenizer.pass_length(longest)
