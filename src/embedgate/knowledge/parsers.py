"""Turning uploaded bytes into text, safely.

Formats: PDF (pypdfium2; pdfminer.six when pdfium's text looks like mojibake, common in
Chinese PDFs), DOCX (python-docx, tables included), HTML (BeautifulSoup + lxml, scripts and
styles dropped), Markdown and plain text in any common encoding (charset-normalizer).

Safe by construction: the caller passes bytes and a file name that is only data; sizes, page
counts, zip members and decompressed sizes are checked before parsing; XML with DTD / entity
declarations is refused (defusedxml). Parsing runs in a worker process with a time limit
(`parse_worker`), so a hostile file cannot hang or crash the server.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

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


def _check_docx_container(data: bytes, limits: ParseLimits) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise _error(ErrorKind.INVALID_REQUEST, "the DOCX is not a valid zip container") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_docx_members:
            raise _error(
                ErrorKind.REQUEST_TOO_LARGE,
                f"the DOCX has {len(members)} parts; at most {limits.max_docx_members}",
            )
        total = sum(m.file_size for m in members)
        if total > limits.max_docx_uncompressed:
            raise _error(
                ErrorKind.REQUEST_TOO_LARGE,
                f"the DOCX expands to {total} bytes, over the {limits.max_docx_uncompressed} "
                "limit (a zip bomb?)",
            )
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring

        for member in members:
            if not member.filename.endswith((".xml", ".rels")):
                continue
            xml = archive.read(member)
            if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
                raise _error(
                    ErrorKind.INVALID_REQUEST,
                    f"the DOCX part {member.filename} declares XML entities; refused",
                )
            try:
                fromstring(xml)
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


def parse_html(data: bytes) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "iframe", "object"]):
        tag.decompose()
    lines = []
    for element in soup.find_all(
        ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "td", "th", "pre", "blockquote"]
    ):
        text = " ".join(element.get_text(" ", strip=True).split())
        if not text or element.find_parent(["p", "li", "td", "th", "pre", "blockquote"]):
            continue
        if element.name and element.name[0] == "h" and element.name[1:].isdigit():
            text = "#" * int(element.name[1:]) + " " + text
        lines.append(text)
    if not lines:
        lines = [" ".join(soup.get_text(" ", strip=True).split())]
    return ParsedDocument([(1, "\n\n".join(lines))])


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) first, then charset-normalizer's best guess."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise _error(ErrorKind.INVALID_REQUEST, "the text file's encoding cannot be recognised")
    return str(best)


def check_upload(filename: str, data: bytes, limits: ParseLimits) -> str:
    """The checks an upload gets before it is accepted (cheap; no parsing): empty, too big,
    unsupported type, and for DOCX the zip container (bombs, entity declarations)."""
    if not data:
        raise _error(ErrorKind.INVALID_REQUEST, "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise _error(
            ErrorKind.REQUEST_TOO_LARGE, f"the file is over the {limits.max_bytes}-byte limit"
        )
    kind = detect_format(filename, data)
    if kind == "docx":
        _check_docx_container(data, limits)
    return kind


def parse_bytes(filename: str, data: bytes, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse one uploaded file (call through `parse_worker.parse_with_limit`)."""
    limits = limits or ParseLimits()
    kind = check_upload(filename, data, limits)
    if kind == "pdf":
        document = parse_pdf(data, limits)
    elif kind == "docx":
        document = parse_docx_checked(data)
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
