"""The words lexical search matches on, cut the same way for documents and queries.

embedgate segments text itself (jieba in search mode, with the project's enterprise vocabulary
so that 内网 stays one word) and gives the vector store space-separated terms, which Milvus
splits on whitespace and scores with BM25. Doing it here rather than with Milvus's own jieba
analyzer means the same terms on Milvus Lite and on a Milvus cluster, a vocabulary and stop
words we control, and tokens a test can check exactly.

Normalisation: NFKC (full-width letters and digits become ASCII), lower case; tokens with no
letter, digit or CJK character (spaces, punctuation) and stop words are dropped.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import unicodedata
from functools import cache
from importlib import resources
from typing import Any


def _lexicon(name: str) -> list[str]:
    text = resources.files("embedgate.knowledge").joinpath("lexicon", name).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _meaningful(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


class TextAnalyzer:
    """Terms of a text. Thread-safe; the segmenter's dictionary loads on first use (~0.6 s)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._segmenter: Any = None
        self.stop_words = frozenset(_lexicon("stopwords.txt"))
        self.vocabulary = tuple(_lexicon("terms.txt"))

    @property
    def loaded(self) -> bool:
        """Whether the dictionary is built (building it takes ~1.5 s of one core)."""
        return self._segmenter is not None

    def segmenter(self) -> Any:
        """The loaded jieba tokenizer (its dictionary built privately, see `_load`)."""
        return self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._segmenter is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                segmenter = jieba.Tokenizer()
                # jieba caches its dictionary in the shared temp dir and trusts whatever file
                # it finds there; build it in a private directory and discard the cache
                private = tempfile.mkdtemp(prefix="embedgate-jieba-")
                try:
                    segmenter.tmp_dir = private
                    segmenter.initialize()
                finally:
                    shutil.rmtree(private, ignore_errors=True)
                for word in self.vocabulary:
                    segmenter.add_word(word, freq=2000)
                self._segmenter = segmenter
        return self._segmenter

    def terms(self, text: str) -> list[str]:
        """The text's search terms, in order (repeats kept: BM25 counts them)."""
        normal = unicodedata.normalize("NFKC", text).lower()
        segmenter = self._load()
        return [
            token
            for token in (t.strip() for t in segmenter.cut_for_search(normal, HMM=True))
            if token and _meaningful(token) and token not in self.stop_words
        ]

    def joined(self, text: str) -> str:
        """The terms as one space-separated string: what the vector store indexes."""
        return " ".join(self.terms(text))


@cache
def shared_analyzer() -> TextAnalyzer:
    """One analyzer per process (its dictionary is ~50 MB of Python objects)."""
    return TextAnalyzer()


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def script_language(text: str, sample: int = 20000) -> str:
    """'zh' when CJK ideographs are at least a third of the letters (a Chinese sentence
    carries English terms; an English one rarely carries Chinese), 'en' for Latin letters,
    'other' for anything else or no letters. A script test, not a language detector: enough
    to tell whether an English-only model can read the text."""
    cjk = latin = other = 0
    for ch in text[:sample]:
        if _is_cjk(ch):
            cjk += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
        elif ch.isalpha():
            other += 1
    letters = cjk + latin + other
    if not letters:
        return "other"
    # a Chinese character carries a word's worth of meaning, a Latin letter a fifth of one
    if cjk * 3 >= letters - cjk and cjk * 5 >= latin:
        return "zh"
    return "en" if latin >= other else "other"
