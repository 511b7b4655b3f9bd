"""Parsers on real files built here, and the limits that make them safe."""

from __future__ import annotations

import pytest

from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.parse_worker import parse_with_limit
from embedgate.knowledge.parsers import ParseLimits, check_upload, looks_like_mojibake, parse_bytes
from support.documents import (
    docx_with,
    docx_with_entities,
    docx_with_false_sizes,
    docx_zip_bomb,
    pdf_with_text,
)

LIMITS = ParseLimits()


def test_pdf_pages() -> None:
    doc = parse_bytes("report.pdf", pdf_with_text(["Hello PDF world", "Second page here"]))
    assert [n for n, _ in doc.pages] == [1, 2]
    assert "Hello PDF world" in doc.pages[0][1] and "Second page" in doc.pages[1][1]


def test_pdf_page_limit() -> None:
    with pytest.raises(ServiceError) as info:
        parse_bytes("big.pdf", pdf_with_text(["p"] * 5), ParseLimits(max_pages=3))
    assert info.value.kind is ErrorKind.REQUEST_TOO_LARGE


def test_docx_with_headings_and_tables() -> None:
    data = docx_with("Policy", ["Employees may work remotely."], [["Region", "Days"], ["EU", "3"]])
    text = parse_bytes("p.docx", data).text
    assert "# Policy" in text and "Employees may work remotely." in text and "EU | 3" in text


def test_docx_bomb_and_entities_are_refused_before_parsing() -> None:
    with pytest.raises(ServiceError) as bomb:
        parse_bytes("bomb.docx", docx_zip_bomb(), LIMITS)
    assert bomb.value.kind is ErrorKind.REQUEST_TOO_LARGE and "zip bomb" in bomb.value.message
    with pytest.raises(ServiceError) as entities:
        parse_bytes("lol.docx", docx_with_entities(), LIMITS)
    assert entities.value.kind is ErrorKind.INVALID_REQUEST and "entities" in entities.value.message


def test_docx_bombs_are_measured_by_inflated_bytes_not_headers() -> None:
    """The headers claim 1,000 bytes; the part inflates to 100 MB. Counting what comes out
    of the stream (never the claim) stops it, cleanly, as a bad file."""
    with pytest.raises(ServiceError) as lying:
        parse_bytes("liar.docx", docx_with_false_sizes(), LIMITS)
    assert lying.value.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.REQUEST_TOO_LARGE)
    # an honest archive past the ratio limit is refused while inflating, not after
    ratio = ParseLimits(max_docx_ratio=50)
    with pytest.raises(ServiceError) as honest:
        parse_bytes("ratio.docx", docx_zip_bomb(expanded=20 * 1024 * 1024), ratio)
    assert "zip bomb" in honest.value.message


def test_the_server_only_checks_type_and_size() -> None:
    """Inflating and parsing happen in the parse worker: the server's check never opens
    the archive, so a bomb passes it and fails in the worker instead."""
    assert check_upload("bomb.docx", docx_zip_bomb(), LIMITS) == "docx"


def test_html_drops_scripts_and_styles() -> None:
    html = b"<html><head><style>p{}</style><script>steal()</script></head><body><h2>Intro</h2><p>Visible <b>text</b></p></body></html>"
    text = parse_bytes("page.html", html).text
    assert (
        "steal" not in text and "p{}" not in text and "## Intro" in text and "Visible text" in text
    )


def test_text_in_legacy_encodings() -> None:
    chinese = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。" * 10
    traditional = "機器學習是人工智慧的一個分支，它使電腦能夠從資料中學習。" * 10
    for text, encoding in ((chinese, "gb18030"), (traditional, "big5"), (chinese, "utf-16")):
        assert parse_bytes("zh.txt", text.encode(encoding)).text.strip() == text
    assert parse_bytes("bom.md", "\ufeff# Title".encode()).text == "# Title"


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("empty.txt", b"", ErrorKind.INVALID_REQUEST),
        ("a.exe", b"MZ\x90", ErrorKind.UNSUPPORTED_MEDIA_TYPE),
        ("fake.pdf", b"hello", ErrorKind.INVALID_REQUEST),
        ("fake.docx", b"hello", ErrorKind.INVALID_REQUEST),
        ("big.txt", b"x" * 2048, ErrorKind.REQUEST_TOO_LARGE),
    ],
)
def test_bad_uploads(name: str, data: bytes, kind: ErrorKind) -> None:
    with pytest.raises(ServiceError) as info:
        check_upload(name, data, ParseLimits(max_bytes=1024))
    assert info.value.kind is kind


def test_mojibake_detection() -> None:
    assert looks_like_mojibake("\ue000\ue001\ue002 abc \ufffd\ufffd")
    assert not looks_like_mojibake("正常的中文文本 and English")


def test_worker_enforces_the_time_limit() -> None:
    data = pdf_with_text([f"page {i} " + "word " * 200 for i in range(300)])
    with pytest.raises(ServiceError) as info:
        parse_with_limit("slow.pdf", data, LIMITS, timeout_s=0.001)
    assert info.value.kind is ErrorKind.PARSE_TIMEOUT
    assert parse_with_limit("ok.txt", b"still works", LIMITS, 30).text == "still works"


def test_worker_reports_parser_errors() -> None:
    with pytest.raises(ServiceError) as info:
        parse_with_limit("broken.pdf", b"%PDF-1.4 garbage", LIMITS, 30)
    assert info.value.kind is ErrorKind.INVALID_REQUEST


def test_html_keeps_text_in_div_span_and_definition_lists() -> None:
    """Before 0.5 only h/p/li/td/th/pre/blockquote were read: a wiki export made of divs
    came out empty, and dt/dd glossaries were lost."""
    html = (
        "<html><head><title>x</title><style>.a{}</style></head><body>"
        "<div class='page'><div>Annual leave is <span>15 days</span> a year.</div>"
        "<div hidden>internal draft</div><div style='display: none'>also hidden</div>"
        "<h2>Glossary</h2><dl><dt>VPN</dt><dd>Virtual private network for the 内网.</dd></dl>"
        "<template><div>template text</div></template><script>steal()</script>"
        "<table><tr><th>Region</th><th>Days</th></tr><tr><td>EU</td><td>3</td></tr></table>"
        "</div></body></html>"
    ).encode()
    blocks = parse_bytes("wiki.html", html).text.split("\n\n")
    assert blocks == [
        "Annual leave is 15 days a year.",
        "## Glossary",
        "VPN",
        "Virtual private network for the 内网.",
        "Region | Days",
        "EU | 3",
    ]


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("年假", "gbk"),  # four bytes: detectors call this Korean
        ("内网密码每九十天更换一次。", "gbk"),
        ("員工出差回來後需要在三十天內提交發票和報銷單。", "big5"),
        ("员工手册：请假须提前三天申请", "utf-16"),
        ("员工手册", "utf-8-sig"),
        ("Größe und Maße", "latin-1"),
    ],
)
def test_text_encodings(text: str, codec: str) -> None:
    assert parse_bytes("note.txt", text.encode(codec)).text == text


def test_pdf_chunks_know_every_page_they_span() -> None:
    from embedgate.knowledge.chunker import chunk_text

    paragraph_end = "the second half of the paragraph continues on page two"
    data = pdf_with_text(["Intro line. A paragraph that starts here and", paragraph_end, "Last."])
    pages = parse_bytes("span.pdf", data).pages
    assert [n for n, _ in pages] == [1, 2, 3]
    chunks = chunk_text(pages, lambda texts: [len(t.split()) for t in texts], max_tokens=200)
    assert len(chunks) == 1 and (chunks[0].page, chunks[0].page_end) == (1, 3)
    small = chunk_text(pages, lambda texts: [len(t.split()) for t in texts], max_tokens=12)
    for chunk in small:  # each chunk's text lies within the pages it names, and only those
        spanned = "\n\n".join(t for n, t in pages if chunk.page <= n <= chunk.page_end)
        assert chunk.text.strip() in spanned
        narrower = "\n\n".join(t for n, t in pages if chunk.page < n <= chunk.page_end)
        assert chunk.page == chunk.page_end or chunk.text.strip() not in narrower
