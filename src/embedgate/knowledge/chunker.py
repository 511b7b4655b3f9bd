"""Token-aware chunking that respects document structure and Chinese punctuation.

Text is cut at the coarsest boundary that makes pieces fit, in this order: Markdown headings,
blank-line paragraphs, line breaks, sentence ends (. ! ? and 。！？；), clause marks (，、 , ; :),
spaces, and finally characters. Pieces are packed greedily into chunks of at most
`max_tokens` tokens, counted with the collection model's own tokenizer; each chunk starts with
the tail of the previous one (about `overlap_tokens`). Every chunk keeps its character span in
the document, the first and last page it spans and its heading path.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

TokenCounter = Callable[[Sequence[str]], list[int]]

# boundary patterns, coarse to fine; a match ends a piece (the separator stays with the piece)
_LEVELS = [
    re.compile(r"\n(?=#{1,6} )"),  # before a Markdown heading
    re.compile(r"\n[ \t]*\n+"),  # blank line(s)
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])"),
    re.compile(r"(?<=[，、,;:：])\s*"),
    re.compile(r"(?<=\s)"),
]
_HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    page: int
    headings: tuple[str, ...]
    tokens: int
    page_end: int = 0  # the last page the chunk touches (0: the same as `page`)


class _Piece(NamedTuple):
    """An atomic span of the text and its token count; chunks are packed from these."""

    start: int
    end: int
    tokens: int


def _split(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    spans = []
    cursor = start
    for match in pattern.finditer(text, start, end):
        cut = match.end()
        if cut <= cursor or cut >= end:
            continue
        spans.append((cursor, cut))
        cursor = cut
    spans.append((cursor, end))
    return spans


class _Pieces:
    """Atomic spans, each within the token budget, found by recursive splitting."""

    def __init__(self, text: str, count: TokenCounter, limit: int) -> None:
        self.text = text
        self.count = count
        self.limit = limit

    def build(self) -> list[_Piece]:
        out: list[_Piece] = []
        self._refine([(0, len(self.text))], 0, out)
        return out

    def _refine(self, spans: list[tuple[int, int]], level: int, out: list[_Piece]) -> None:
        counts = self.count([self.text[s:e] for s, e in spans])
        for (start, end), tokens in zip(spans, counts, strict=True):
            if tokens <= self.limit:
                out.append(_Piece(start, end, tokens))
            elif level < len(_LEVELS):
                self._refine(_split(self.text, start, end, _LEVELS[level]), level + 1, out)
            else:
                self._by_characters(start, end, out)

    def _by_characters(self, start: int, end: int, out: list[_Piece]) -> None:
        """No boundary left (e.g. a long run of CJK without punctuation): cut by length."""
        while start < end:
            low, high = start + 1, end
            while low < high:  # longest prefix that fits
                mid = (low + high + 1) // 2
                if self.count([self.text[start:mid]])[0] <= self.limit:
                    low = mid
                else:
                    high = mid - 1
            tokens = self.count([self.text[start:low]])[0]
            out.append(_Piece(start, low, tokens))
            start = low


def _heading_paths(text: str) -> tuple[list[int], list[tuple[str, ...]]]:
    starts: list[int] = []
    paths: list[tuple[str, ...]] = []
    stack: list[tuple[int, str]] = []
    for match in _HEADING.finditer(text):
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, match.group(2)))
        starts.append(match.start())
        paths.append(tuple(title for _, title in stack))
    return starts, paths


def _first_body_line(text: str, start: int, end: int) -> int:
    """The offset of the chunk's first line that is not a heading: a chunk that begins with
    '# Handbook', '## Chapter 3' and then text sits under the whole path."""
    offset = start
    for line in text[start:end].splitlines(keepends=True):
        if line.strip() and not _HEADING.match(line.strip()):
            return offset
        offset += len(line)
    return start


def _last_visible(text: str, start: int, end: int) -> int:
    """The offset of the chunk's last non-space character (a chunk that ends in the blank
    lines between two pages does not reach the next page)."""
    stripped = text[start:end].rstrip()
    return start + max(len(stripped) - 1, 0)


def chunk_text(
    pages: Sequence[tuple[int, str]],
    count: TokenCounter,
    *,
    max_tokens: int = 512,
    overlap_tokens: int = 64,
) -> list[Chunk]:
    """Chunks of the pages' text (joined by blank lines), in order."""
    if max_tokens < 2:
        raise ValueError("max_tokens must be at least 2")
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    page_starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for _number, page_text in pages:
        page_starts.append(offset)
        parts.append(page_text)
        offset += len(page_text) + 2
    page_numbers = [number for number, _ in pages]
    text = "\n\n".join(parts)
    if not text.strip():
        return []
    pieces = [p for p in _Pieces(text, count, max_tokens).build() if p.end > p.start]
    heading_starts, heading_paths = _heading_paths(text)

    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        # pack pieces[i:j] within the budget (estimated, then verified with the tokenizer)
        j, total = i, 0
        while j < len(pieces) and (j == i or total + pieces[j].tokens <= max_tokens):
            total += pieces[j].tokens
            j += 1
        start, end = pieces[i].start, pieces[j - 1].end
        tokens = count([text[start:end]])[0]
        while tokens > max_tokens and j - 1 > i:
            j -= 1
            end = pieces[j - 1].end
            tokens = count([text[start:end]])[0]
        if text[start:end].strip() and tokens > 0:
            h = bisect_right(heading_starts, _first_body_line(text, start, end)) - 1
            visible = start + len(text[start:end]) - len(text[start:end].lstrip())
            first = max(bisect_right(page_starts, visible) - 1, 0)
            last = max(bisect_right(page_starts, _last_visible(text, start, end)) - 1, first)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text[start:end],
                    start=start,
                    end=end,
                    page=page_numbers[first],
                    headings=heading_paths[h] if h >= 0 else (),
                    tokens=tokens,
                    page_end=page_numbers[last],
                )
            )
        if j >= len(pieces):
            break
        # the next chunk begins with the last pieces of this one, up to the overlap budget
        k, carried = j, 0
        while k - 1 > i and carried + pieces[k - 1].tokens <= overlap_tokens:
            k -= 1
            carried += pieces[k].tokens
        i = k
    return chunks
