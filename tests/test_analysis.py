"""The exact terms lexical search indexes and queries with (embedgate's own analysis)."""

from __future__ import annotations

import pytest

from embedgate.knowledge.analysis import TextAnalyzer, script_language


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        # jieba's own dictionary cuts these into single characters; the project vocabulary
        # keeps them whole, in documents and in queries alike
        ("内网", ["内网"]),
        ("如何连接公司内网？", ["连接", "公司", "内网"]),
        ("年假有几天", ["年假", "几天"]),
        # search mode adds the words inside a long word, so 差旅 finds 差旅费
        ("报销差旅费用的流程是什么", ["报销", "差旅", "旅费", "差旅费", "用", "流程"]),
        # English: lower case, no punctuation, no stop words
        ("How do I reset my VPN password?", ["reset", "vpn", "password"]),
        # full-width letters and spaces fold to ASCII (NFKC)
        ("Ｗｉ－Ｆｉ　密码", ["wi", "fi", "密码"]),
        ("，。！？、；：", []),
    ],
)
def test_terms(analyzer: TextAnalyzer, text: str, terms: list[str]) -> None:
    assert analyzer.terms(text) == terms


def test_documents_and_queries_are_cut_alike(analyzer: TextAnalyzer) -> None:
    document = "员工连接公司内网前须开启双因素认证。"
    for query in ("内网", "双因素认证"):
        assert set(analyzer.terms(query)) <= set(analyzer.terms(document))


def test_script_language() -> None:
    assert script_language("VPN连不上怎么办") == "zh"
    assert script_language("员工试用期结束后，每周最多可以远程办公三天。") == "zh"
    assert script_language("How do I reset my VPN password?") == "en"
    assert script_language("The 内网 is down for maintenance tonight") == "en"
    assert script_language("Привет мир") == "other"
    assert script_language("12345 !!") == "other"
