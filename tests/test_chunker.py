"""Chunking properties (hypothesis): within the token limit, covering the whole text in
order, overlapping as configured, for any text including mixed Chinese / English and text
without any punctuation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from embedgate.engine.loading import bundled_model_dir
from embedgate.knowledge.chunker import chunk_text

TOKENIZER = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
TOKENIZER.no_truncation()
TOKENIZER.no_padding()


def count(texts: Sequence[str]) -> list[int]:
    return [len(e.ids) for e in TOKENIZER.encode_batch(list(texts), add_special_tokens=False)]


WORDS = st.sampled_from(
    [
        "the",
        "model",
        "embedding",
        "检索",
        "向量",
        "数据库",
        "企业",
        "。",
        "，",
        "、",
        "！",
        "？",
        "；",
        ".",
        ",",
        "\n",
        "\n\n",
        "# Title\n",
        "## 小节\n",
        "中华人民共和国",
        "supercalifragilistic",
        " ",
        "1234567890",
    ]
)
TEXTS = st.one_of(
    st.lists(WORDS, min_size=1, max_size=400).map(lambda ws: " ".join(ws)),
    st.text(alphabet="我们今天去公园玩机器学习模型", min_size=1, max_size=3000),  # no punctuation
    st.text(min_size=1, max_size=1500),
)


def check(text: str, max_tokens: int, overlap: int) -> None:
    chunks = chunk_text([(1, text)], count, max_tokens=max_tokens, overlap_tokens=overlap)
    # within the limit, as the model's tokenizer counts
    for chunk in chunks:
        assert 0 < count([chunk.text])[0] <= max_tokens
        assert chunk.text == text[chunk.start : chunk.end]
    # in order, and every non-blank character is in some chunk
    covered = [False] * len(text)
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start and a.end <= b.end
        assert b.start <= a.end or not count([text[a.end : b.start]])[0]
    for chunk in chunks:
        for i in range(chunk.start, chunk.end):
            covered[i] = True
    assert all(covered[i] or not count([text[i]])[0] for i in range(len(text)))
    # overlap never exceeds its budget
    for a, b in itertools.pairwise(chunks):
        if b.start < a.end:
            assert count([text[b.start : a.end]])[0] <= max(overlap, 0) + 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.integers(8, 120), st.integers(0, 30))
def test_chunking_properties(text: str, max_tokens: int, overlap: int) -> None:
    check(text, max_tokens, overlap)


def test_structure_is_kept() -> None:
    text = "# Guide\n\nIntro paragraph.\n\n## Install\n\nRun the installer. It is quick.\n\n## 使用\n\n第一步。第二步！第三步？"
    chunks = chunk_text([(1, text)], count, max_tokens=12, overlap_tokens=0)
    assert next(c.headings for c in chunks) == ("Guide",)
    assert any(c.headings == ("Guide", "使用") for c in chunks)
    sentences = chunk_text(
        [(1, "第一步。第二步！第三步？第四步；")], count, max_tokens=5, overlap_tokens=0
    )
    assert [c.text for c in sentences] == ["第一步。", "第二步！", "第三步？", "第四步；"]
    clauses = chunk_text([(1, "苹果，香蕉、橘子，葡萄")], count, max_tokens=3, overlap_tokens=0)
    assert [c.text for c in clauses] == ["苹果，", "香蕉、", "橘子，", "葡萄"]


def test_pages_and_offsets() -> None:
    pages = [(1, "First page text. " * 20), (2, "Second page 第二页。" * 20)]
    chunks = chunk_text(pages, count, max_tokens=40, overlap_tokens=5)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    assert {c.page for c in chunks} == {1, 2}


def test_overlap_is_about_what_was_asked() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = chunk_text([(1, text)], count, max_tokens=64, overlap_tokens=8)
    overlaps = [count([text[b.start : a.end]])[0] for a, b in itertools.pairwise(chunks)]
    assert all(0 < o <= 8 for o in overlaps)


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        chunk_text([(1, "x")], count, max_tokens=1)
    assert chunk_text([(1, "   \n ")], count) == []
