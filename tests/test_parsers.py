"""Parsers on real files built here, and the limits that make them safe."""

from __future__ import annotations

import pytest

from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.parse_worker import parse_with_limit
from embedgate.knowledge.parsers import ParseLimits, check_upload, looks_like_mojibake, parse_bytes
from support.documents import docx_with, docx_with_entities, docx_zip_bomb, pdf_with_text

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
        check_upload("bomb.docx", docx_zip_bomb(), LIMITS)
    assert bomb.value.kind is ErrorKind.REQUEST_TOO_LARGE
    with pytest.raises(ServiceError) as entities:
        check_upload("lol.docx", docx_with_entities(), LIMITS)
    assert entities.value.kind is ErrorKind.INVALID_REQUEST and "entities" in entities.value.message


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
