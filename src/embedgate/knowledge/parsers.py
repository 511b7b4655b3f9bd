"""Turning uploaded bytes into text, safely.

Formats: PDF (pypdfium2; pdfminer.six when pdfium's text looks like mojibake, common in
Chinese PDFs), DOCX (python-docx, tables included), HTML (BeautifulSoup + lxml, scripts and
styles dropped), Markdown and plain text in any common encoding (charset-normalizer).

Safe by construction: the caller passes bytes and a file name that is only data. The server
itself only checks size and type (`check_upload`); everything that inflates or parses runs in
the parse worker (`parse_worker`: a process with a time and a memory limit). There, a DOCX's
parts are inflated as a stream and counted byte by byte, never trusting the sizes its zip
headers declare, and abandoned past an absolute limit or a compression ratio no document has;
XML with DTD / entity declarations is refused (defusedxml).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from typing import Any

from embedgate.errors import ErrorKind, ServiceError

SUPPORTED = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
}


@dataclass(frozen=True)
class ParseLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 2000
    max_docx_members: int = 2000
    max_docx_uncompressed: int = 200 * 1024 * 1024
    max_docx_ratio: int = 200  # inflated bytes per compressed byte, over the whole file
    max_chars: int = 20_000_000


@dataclass
class ParsedDocument:
    """Text per page (one page for formats without pages); page numbers start at 1."""

    pages: list[tuple[int, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(text for _, text in self.pages)


def _error(kind: ErrorKind, message: str) -> ServiceError:
    return ServiceError(kind, message, "file")


def detect_format(filename: str, data: bytes) -> str:
    """Format from the extension, cross-checked with the file's magic bytes."""
    lower = filename.lower()
    ext = lower[lower.rfind(".") :] if "." in lower else ""
    kind = SUPPORTED.get(ext)
    if kind is None:
        if data.startswith(b"%PDF-"):
            return "pdf"
        raise _error(
            ErrorKind.UNSUPPORTED_MEDIA_TYPE,
            f"unsupported file type {ext or '(none)'}; send PDF, DOCX, HTML, Markdown or TXT",
        )
    if kind == "pdf" and not data.startswith(b"%PDF-"):
        raise _error(ErrorKind.INVALID_REQUEST, "the file is named .pdf but is not a PDF")
    if kind == "docx" and not data.startswith(b"PK"):
        raise _error(ErrorKind.INVALID_REQUEST, "the file is named .docx but is not a DOCX")
    return kind


def looks_like_mojibake(text: str) -> bool:
    """pdfium returns private-use / control / replacement characters for fonts it cannot map."""
    sample = text[:20000]
    if not sample.strip():
        return True
    bad = sum(
        1
        for ch in sample
        if ch == "\ufffd" or 0xE000 <= ord(ch) <= 0xF8FF or (ord(ch) < 32 and ch not in "\n\r\t\f")
    )
    return bad / max(len(sample), 1) > 0.05


def parse_pdf(data: bytes, limits: ParseLimits) -> ParsedDocument:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:
        raise _error(ErrorKind.INVALID_REQUEST, f"the PDF cannot be opened: {exc}") from None
    try:
        count = len(pdf)
        if count > limits.max_pages:
            raise _error(
                ErrorKind.REQUEST_TOO_LARGE,
                f"the PDF has {count} pages; at most {limits.max_pages} are accepted",
            )
        pages = []
        for number in range(count):
            page = pdf[number]
            textpage = page.get_textpage()
            pages.append((number + 1, textpage.get_text_bounded()))
            textpage.close()
            page.close()
    finally:
        pdf.close()
    document = ParsedDocument(pages)
    if looks_like_mojibake(document.text):
        fallback = _parse_pdf_pdfminer(data)
        if fallback.text.strip() and not looks_like_mojibake(fallback.text):
            return fallback
    return document


def _parse_pdf_pdfminer(data: bytes) -> ParsedDocument:
    from pdfminer.high_level import extract_text

    pages = []
    try:
        text = extract_text(io.BytesIO(data))
    except Exception:
        return ParsedDocument([])
    for number, page_text in enumerate(text.split("\f"), start=1):
        if page_text.strip():
            pages.append((number, page_text))
    return ParsedDocument(pages)


def _inflate(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: int) -> bytes:
    """A member's bytes, inflated in slices and counted; ZipBomb past `budget` bytes."""
    out = bytearray()
    with archive.open(member) as stream:
        while piece := stream.read(64 * 1024):
            out += piece
            if len(out) > budget:
                raise _ZipBomb
    return bytes(out)


class _ZipBomb(Exception):
    pass


def _check_docx_container(data: bytes, limits: ParseLimits) -> None:
    """Inflate every part as a stream, counting the bytes that actually come out (the sizes
    in the zip headers are the sender's claim), and check the XML parts for entities."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise _error(ErrorKind.INVALID_REQUEST, "the DOCX is not a valid zip container") from None
    budget = min(limits.max_docx_uncompressed, len(data) * limits.max_docx_ratio)
    inflated = 0
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_docx_members:
            raise _error(
                ErrorKind.REQUEST_TOO_LARGE,
                f"the DOCX has {len(members)} parts; at most {limits.max_docx_members}",
            )
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring

        for member in members:
            try:
                content = _inflate(archive, member, budget - inflated)
            except _ZipBomb:
                raise _error(
                    ErrorKind.REQUEST_TOO_LARGE,
                    f"the DOCX inflates past {budget} bytes (the limit is "
                    f"{limits.max_docx_uncompressed} bytes and {limits.max_docx_ratio}x its "
                    "size); refused as a zip bomb",
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise _error(
                    ErrorKind.INVALID_REQUEST, f"the DOCX part {member.filename} is corrupt ({exc})"
                ) from None
            inflated += len(content)
            if not member.filename.endswith((".xml", ".rels")):
                continue
            if b"<!DOCTYPE" in content or b"<!ENTITY" in content:
                raise _error(
                    ErrorKind.INVALID_REQUEST,
                    f"the DOCX part {member.filename} declares XML entities; refused",
                )
            try:
                fromstring(content)
            except DefusedXmlException:
                raise _error(ErrorKind.INVALID_REQUEST, "the DOCX contains unsafe XML") from None
            except Exception:
                raise _error(ErrorKind.INVALID_REQUEST, "the DOCX contains broken XML") from None


def parse_docx(data: bytes, limits: ParseLimits) -> ParsedDocument:
    _check_docx_container(data, limits)
    return parse_docx_checked(data)


def parse_docx_checked(data: bytes) -> ParsedDocument:
    """A DOCX whose container already passed `_check_docx_container`."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            if style.lower().startswith("heading"):
                level = "".join(ch for ch in style if ch.isdigit()) or "1"
                text = "#" * min(int(level), 6) + " " + text
            blocks.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                if any(cells):
                    blocks.append(" | ".join(cells))
    return ParsedDocument([(1, "\n\n".join(blocks))])


_DROPPED = frozenset(
    {
        "script",
        "style",
        "template",
        "head",
        "noscript",
        "iframe",
        "object",
        "embed",
        "svg",
        "canvas",
        "title",
        "meta",
        "link",
    }
)
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "br",
    }
)
_CELLS = frozenset({"td", "th"})


def _hidden(tag: Any) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    if tag.name == "input" and str(attrs.get("type", "")).lower() == "hidden":
        return True
    style = str(attrs.get("style", "")).replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


class _HtmlText:
    """Visible text of an HTML tree as blocks: every element's text except dropped and
    hidden ones; block elements start a new block, table cells are joined with ' | ',
    headings become Markdown headings (the chunker's heading path)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._line: list[str] = []

    def flush(self, prefix: str = "") -> None:
        text = " ".join(" ".join(self._line).split())
        self._line = []
        if text.strip(" |"):
            self.blocks.append(prefix + text.strip(" |"))

    def walk(self, node: Any) -> None:
        from bs4.element import Comment, NavigableString, Tag

        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # not a Doctype, CData or declaration
                    self._line.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _DROPPED or _hidden(child):
                continue
            name = child.name
            if name in _BLOCKS:
                self.flush()
                self.walk(child)
                level = name[1:] if name[0] == "h" and name[1:].isdigit() else ""
                self.flush("#" * int(level) + " " if level else "")
            elif name in _CELLS:
                self._line.append(" | ")
                self.walk(child)
            else:
                self.walk(child)


def parse_html(data: bytes) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    text = _HtmlText()
    text.walk(soup)
    text.flush()
    return ParsedDocument([(1, "\n\n".join(text.blocks))])


def _is_hanzi(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _chinese_plausibility(text: str) -> float:
    """0-1: how much `text` reads like Chinese. Bytes decoded with the wrong codec give
    kana, box drawing or a random mix of characters; real Chinese is mostly dictionary
    words (longer texts) or common characters (a few characters)."""
    from embedgate.knowledge.analysis import shared_analyzer

    segmenter = shared_analyzer().segmenter()
    sample = text[:5000]
    wide = [ch for ch in sample if ord(ch) > 0x7F and not ch.isspace()]
    hanzi = [ch for ch in wide if _is_hanzi(ch)]
    punctuation = [ch for ch in wide if "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"]
    if not hanzi or len(hanzi) + len(punctuation) < 0.8 * len(wide):
        return 0.0
    if len(hanzi) < 8:  # too short for words: are these characters in common use?
        return sum(1 for ch in hanzi if segmenter.FREQ.get(ch, 0) >= 1000) / len(hanzi)
    words = sum(
        len(t) for t in segmenter.lcut(sample, HMM=False) if len(t) >= 2 and all(map(_is_hanzi, t))
    )
    return words / len(hanzi)


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
PLAUSIBLE_CHINESE = 0.3


def decode_text(data: bytes) -> str:
    """A byte order mark, else UTF-8, else GB18030 or Big5 when one decodes to plausible
    Chinese (dictionary words, not a random mix of characters), else charset-normalizer's
    guess. Chinese first because the detectors misread short Chinese files (a 20-byte GBK
    note comes out as Korean)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates = []
    for codec in ("gb18030", "big5"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        candidates.append((_chinese_plausibility(text), text))
    if candidates:
        share, text = max(candidates, key=lambda c: c[0])
        if share >= PLAUSIBLE_CHINESE:
            return text
    from charset_normalizer import from_bytes

    if sum(1 for byte in data if byte < 0x80) >= 0.7 * len(data):
        return data.decode("cp1252", errors="replace")  # Western text with a few accents
    # Chinese codecs were judged implausible above: don't let the detector pick them again
    best = from_bytes(data, cp_exclusion=["gb18030", "gb2312", "gbk", "big5", "big5hkscs"]).best()
    if best is None:
        raise _error(ErrorKind.INVALID_REQUEST, "the text file's encoding cannot be recognised")
    return str(best)


def check_upload(filename: str, data: bytes, limits: ParseLimits) -> str:
    """The checks an upload gets in the server before it is accepted (cheap, nothing is
    inflated or parsed): empty, too big, unsupported type."""
    if not data:
        raise _error(ErrorKind.INVALID_REQUEST, "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise _error(
            ErrorKind.REQUEST_TOO_LARGE, f"the file is over the {limits.max_bytes}-byte limit"
        )
    return detect_format(filename, data)


def parse_bytes(filename: str, data: bytes, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse one uploaded file (in the parse worker: `parse_worker.ParseWorker`)."""
    limits = limits or ParseLimits()
    kind = check_upload(filename, data, limits)
    if kind == "pdf":
        document = parse_pdf(data, limits)
    elif kind == "docx":
        document = parse_docx(data, limits)
    elif kind == "html":
        document = parse_html(data)
    else:
        document = ParsedDocument([(1, decode_text(data))])
    document.pages = [(n, t.replace("\x00", "")) for n, t in document.pages]
    if sum(len(t) for _, t in document.pages) > limits.max_chars:
        raise _error(ErrorKind.REQUEST_TOO_LARGE, "the document has too much text")
    if not document.text.strip():
        raise _error(ErrorKind.INVALID_REQUEST, "no text could be extracted from the file")
    return document
