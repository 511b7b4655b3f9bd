"""Turning content token ids into the exact sequence a model sees.

A model wraps content in special tokens (BERT: ``[CLS] ... [SEP]``; Qwen3: ``... <|endoftext|>``).
We learn that template once from the tokenizer and apply it ourselves, so that text inputs,
token-id inputs and truncation all end up identical, and so that Qwen3's end-of-text token is
guaranteed even when a tokenizer (e.g. an early conversion) does not append it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedgate.errors import ErrorKind, ServiceError


def find_template(
    with_specials: Sequence[int], without_specials: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split a probe's ids into (prefix, suffix) around its content ids."""
    n = len(without_specials)
    for start in range(len(with_specials) - n + 1):
        if list(with_specials[start : start + n]) == list(without_specials):
            return tuple(with_specials[:start]), tuple(with_specials[start + n :])
    raise ValueError("tokenizer adds special tokens inside the text; cannot derive its template")


@dataclass(frozen=True)
class SequenceTemplate:
    """Prefix / suffix special ids, the vocabulary bound and the per-input token limit."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    vocab_size: int
    max_tokens: int

    @classmethod
    def for_model(
        cls,
        prefix: Sequence[int],
        suffix: Sequence[int],
        vocab_size: int,
        max_tokens: int,
        required_eos: int | None = None,
    ) -> SequenceTemplate:
        """Build the template; `required_eos` is appended when the tokenizer does not add it."""
        suffix_ids = tuple(suffix)
        if required_eos is not None and (not suffix_ids or suffix_ids[-1] != required_eos):
            suffix_ids = (*suffix_ids, required_eos)
        if max_tokens <= len(prefix) + len(suffix_ids):
            raise ValueError("max_tokens leaves no room for content")
        return cls(tuple(prefix), suffix_ids, vocab_size, max_tokens)

    @property
    def overhead(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def wrap(self, content: Sequence[int], index: int, truncate: bool) -> list[int]:
        """Content ids -> full sequence, enforcing the limit (or truncating when asked)."""
        room = self.max_tokens - self.overhead
        if len(content) > room:
            if not truncate:
                total = len(content) + self.overhead
                raise ServiceError(
                    ErrorKind.INPUT_TOO_LONG,
                    f"input[{index}] has {total} tokens, over the limit of {self.max_tokens} "
                    f'by {total - self.max_tokens}; shorten it or send "truncate": true',
                    param="input",
                )
            content = content[:room]
        return [*self.prefix, *content, *self.suffix]

    def wrap_token_ids(self, ids: Sequence[int], index: int, truncate: bool) -> list[int]:
        """Client-supplied ids: checked against the vocabulary, wrapped unless already wrapped."""
        for value in ids:
            if not 0 <= value < self.vocab_size:
                raise ServiceError(
                    ErrorKind.TOKEN_OUT_OF_VOCABULARY,
                    f"input[{index}] contains token id {value}, outside this model's vocabulary "
                    f"[0, {self.vocab_size}). Token ids must come from this model's tokenizer; "
                    "LangChain's OpenAIEmbeddings sends tiktoken (cl100k) ids unless created "
                    "with check_embedding_ctx_length=False, which sends text instead",
                    param="input",
                )
        content: Sequence[int] = ids
        if self._is_wrapped(ids):
            content = ids[len(self.prefix) : len(ids) - len(self.suffix)]
        return self.wrap(content, index, truncate)

    def _is_wrapped(self, ids: Sequence[int]) -> bool:
        if len(ids) < self.overhead or self.overhead == 0:
            return False
        head = tuple(ids[: len(self.prefix)])
        tail = tuple(ids[len(ids) - len(self.suffix) :]) if self.suffix else ()
        return head == self.prefix and tail == self.suffix
