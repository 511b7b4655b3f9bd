"""The tokenizer side of a reranker: (query, document) pairs into the sequences it scores.

Qwen3-Reranker: the formatted pair text without special tokens, cut at the end to leave room
for the fixed prefix and suffix, then wrapped in them; left padding with the pad token.
Cross-encoders: the tokenizer's own pair template ([CLS] q [SEP] d [SEP] for BERT), truncated
longest-first to the model's limit as transformers does, right padding. Batches are only ids
and a mask (what a model process is sent); where the model has segment embeddings the model
side marks positions after the first separator as segment B.

Like `hf_tokenizer.py` it reads tokenizer.json without transformers or torch, so it runs in a
server that only tokenises and collates while the model runs in a model process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedgate.engine.backends.hf_tokenizer import IdArray
from embedgate.engine.backends.tokenizer_files import TokenizerFiles, read_tokenizer_files
from embedgate.engine.rerank_spec import (
    QWEN3_RERANK_PREFIX,
    QWEN3_RERANK_SUFFIX,
    RerankSpec,
    qwen3_rerank_text,
)

# the model card's pair text, read back (`pair_text`)
QWEN3_PAIR = re.compile(r"<Instruct>: .*?\n<Query>: (.*)\n<Document>: (.*)", re.DOTALL)


class PairTokenizer:
    """Sequences and padded batches for one reranker, as its authors build them."""

    def __init__(self, files: TokenizerFiles, spec: RerankSpec) -> None:
        self.spec = spec
        self._tokenizer = files.tokenizer
        self._truncation = threading.Lock()
        limit = spec.max_tokens
        if files.model_max_length is not None:
            limit = min(limit, files.model_max_length)
        self.max_tokens = limit
        self.pad_id = files.pad_token_id if files.pad_token_id is not None else 0
        self._prefix: list[int] = []
        self._suffix: list[int] = []
        self._separator: int | None = None
        if spec.kind == "qwen3":
            self._prefix = self._plain(QWEN3_RERANK_PREFIX)
            self._suffix = self._plain(QWEN3_RERANK_SUFFIX)
            if len(self._prefix) + len(self._suffix) >= limit:
                raise ValueError(f"the model's limit of {limit} tokens leaves no room for a pair")
        else:
            self._separator = self._first_separator() if spec.token_types else None
        # the template's tokens ([CLS], [SEP], <s>...), not an unknown character's [UNK]
        added = self._tokenizer.get_added_tokens_decoder()
        unknown = getattr(self._tokenizer.model, "unk_token", None)
        self._structure = {
            int(i) for i, token in added.items() if token.special and token.content != unknown
        }

    @classmethod
    def load(cls, model_dir: Path, spec: RerankSpec) -> PairTokenizer:
        return cls(read_tokenizer_files(model_dir), spec)

    def yes_no(self) -> tuple[int, int]:
        """The ids of the tokens "yes" and "no" whose logits a Qwen3 reranker compares."""
        yes, no = self._tokenizer.token_to_id("yes"), self._tokenizer.token_to_id("no")
        if yes is None or no is None:
            raise ValueError("the reranker's vocabulary has no 'yes' / 'no' token")
        return int(yes), int(no)

    def _plain(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def _first_separator(self) -> int:
        """The token that ends segment A in the pair template (BERT's [SEP])."""
        probe = self._tokenizer.encode("a", "b", add_special_tokens=True)
        boundary = probe.type_ids.index(1) if 1 in probe.type_ids else len(probe.ids)
        return int(probe.ids[boundary - 1])

    def sequences(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[list[int]]:
        """One full sequence (special tokens included) per document, within `max_tokens`."""
        if self.spec.kind == "qwen3":
            # the model card calls the tokenizer with its defaults: whatever special tokens
            # its post-processor adds (none for Qwen's own) count within the truncation room
            room = self.max_tokens - len(self._prefix) - len(self._suffix)
            texts = [qwen3_rerank_text(instruction, query, d) for d in documents]
            bodies = self._truncated(texts, room)
            return [[*self._prefix, *body, *self._suffix] for body in bodies]
        return self._truncated([(query, d) for d in documents], self.max_tokens)

    def _truncated(self, inputs: list[str] | list[tuple[str, str]], limit: int) -> list[list[int]]:
        """Encodings with special tokens, cut longest-first (from the end) to `limit` tokens
        in all, as transformers' `truncation=True` cuts them."""
        with self._truncation:  # the setting lives on the shared tokenizer object
            self._tokenizer.enable_truncation(limit, strategy="longest_first")
            try:
                encodings = self._tokenizer.encode_batch_fast(inputs, add_special_tokens=True)
            finally:
                self._tokenizer.no_truncation()
        return [list(encoding.ids) for encoding in encodings]

    def pair_text(self, sequence: Sequence[int]) -> tuple[str, str]:
        """The (query, document) texts a sequence holds, as far as truncation kept them: what
        a gateway sends an upstream that applies the template itself."""
        if self.spec.kind == "qwen3":
            body = sequence[len(self._prefix) : len(sequence) - len(self._suffix)]
            match = QWEN3_PAIR.fullmatch(self._tokenizer.decode(list(body)))
            if match is None:
                raise ValueError("not a Qwen3 reranker pair")
            return match.group(1), match.group(2)
        segments: list[list[int]] = [[]]
        for token in sequence:
            if token in self._structure:
                if segments[-1]:
                    segments.append([])
            else:
                segments[-1].append(int(token))
        # an [UNK] stays as its text, which the upstream's tokenizer reads as [UNK] again
        texts = [self._tokenizer.decode(ids, skip_special_tokens=False) for ids in segments if ids]
        return [*texts, ""][0], " ".join(texts[1:])

    @property
    def separator(self) -> int | None:
        """The id ending segment A where the model has segment embeddings (BERT's [SEP]);
        the model side marks what follows it as segment B (`torch/reranker.py`)."""
        return self._separator

    def collate(self, sequences: Sequence[Sequence[int]]) -> tuple[IdArray, IdArray]:
        """(input_ids, attention_mask), padded on the model's side to the longest sequence."""
        longest = max(len(s) for s in sequences)
        ids = np.full((len(sequences), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        left = self.spec.padding_side == "left"
        for row, seq in enumerate(sequences):
            start = longest - len(seq) if left else 0
            ids[row, start : start + len(seq)] = seq
            mask[row, start : start + len(seq)] = 1
        return ids, mask
