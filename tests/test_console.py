"""The web console in a real browser (Playwright + Debian's Chromium, headless) against a
real `embedgate serve` subprocess: the flows of an admin, a team lead (writer) and a reader,
revocation taking effect, the audit chain, hostile file names and text, and CSP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.browser import Incidents, chromium, new_page, screenshot
from support.documents import docx_with, pdf_with_text
from support.processes import Served, serving

pytestmark = pytest.mark.slow

ZH_TEXT = (
    "员工手册第三章：年假制度。\n\n"
    "正式员工每年享有十五天带薪年假，年假须提前两周在系统中申请，经直属主管批准后生效。\n\n"
    "未休完的年假可以顺延到次年第一季度，逾期作废。"
)
PAGES = ("overview", "search", "embeddings", "knowledge", "keys", "usage", "audit")  # nav order
XSS_NAME = "<img src=x onerror=alert(1)>.txt"
XSS_TEXT = "Release notes. <script>alert(2)</script> The parser keeps angle brackets as text."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("console") / "data") as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def sign_in(page: Any, key: str) -> None:
    page.goto("/ui/")
    page.fill("#api-key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#nav a")


def nav_pages(page: Any) -> list[str]:
    return page.eval_on_selector_all("#nav a", "links => links.map(a => a.dataset.page)")


def wait_jobs_done(page: Any, names: list[str]) -> None:
    for name in names:
        row = page.locator("#uploads li", has_text=name)
        row.wait_for()
        page.wait_for_function(
            "(name) => [...document.querySelectorAll('#uploads li')].some("
            "li => li.dataset.file === name && (li.dataset.state === 'succeeded' "
            "|| li.dataset.state === 'failed'))",
            arg=name,
            timeout=120_000,
        )
        assert row.get_attribute("data-state") == "succeeded", row.inner_text()


def search(page: Any, collection: str, query: str) -> dict[str, list[str]]:
    """Run a search; the filenames in each mode's column, best first."""
    page.goto("/ui/#/search")
    page.wait_for_selector(f"#search-collection option[value='{collection}']", state="attached")
    page.select_option("#search-collection", collection)
    page.fill("#search-query", query)
    page.click("#search-run")
    page.wait_for_function(
        "() => document.querySelectorAll('.column').length === 3 && "
        "[...document.querySelectorAll('.column')].every(c => c.querySelector('.hit, .error, .muted:not(:empty)') && !c.textContent.endsWith('…'))"
    )
    out = {}
    for mode in ("dense", "lexical", "hybrid"):
        column = page.locator(f".column[data-mode={mode}]")
        assert column.locator(".error").count() == 0, column.inner_text()
        out[mode] = column.locator(".hit .filename").all_inner_texts()
    return out


def test_console_flows_in_a_real_browser(server: Served, browser: Any) -> None:
    base = server.base
    admin_key = server.admin["Authorization"].removeprefix("Bearer ")
    incidents = Incidents()

    # --- the admin signs in, sees every page, and creates a writer key -----------------------
    admin = new_page(browser, base, incidents)
    sign_in(admin, admin_key)
    assert nav_pages(admin) == list(PAGES)
    admin.wait_for_selector("[data-fact=model] .value")
    assert admin.inner_text("[data-fact=model] .value") == "all-MiniLM-L6-v2"
    assert admin.locator("figure.chart-card").count() == 5
    admin.goto("/ui/#/keys")
    admin.fill("#key-name", "team lead")
    admin.select_option("#key-role", "writer")
    admin.click("#key-create")
    admin.wait_for_selector("#new-key")
    writer_key = admin.inner_text("#new-key")
    admin.click("#copy-key")
    admin.wait_for_selector("#copy-state:has-text('Copied')")
    assert admin.evaluate("navigator.clipboard.readText()") == writer_key
    admin.fill("#key-name", "auditor")
    admin.select_option("#key-role", "reader")
    admin.click("#key-create")
    admin.wait_for_function(
        "(old) => document.querySelector('#new-key').textContent !== old", arg=writer_key
    )
    reader_key = admin.inner_text("#new-key")
    incidents.assert_clean(admin)

    # --- the writer builds a knowledge base -------------------------------------------------
    writer = new_page(browser, base, incidents)
    sign_in(writer, writer_key)
    assert nav_pages(writer) == ["search", "embeddings", "knowledge"]
    writer.goto("/ui/#/knowledge")
    writer.fill("#collection-name", "handbook")
    writer.click("#collection-create")
    writer.wait_for_selector("#dropzone")
    files = [
        {
            "name": "vpn-guide.docx",
            "mimeType": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "buffer": docx_with(
                "Remote access",
                ["Connect to the corporate VPN with the WireGuard client and your hardware token."],
                [["Client", "WireGuard"], ["Token", "YubiKey"]],
            ),
        },
        {
            "name": "expenses.pdf",
            "mimeType": "application/pdf",
            "buffer": pdf_with_text(
                ["Travel expenses are reimbursed within thirty days of submitting receipts."]
            ),
        },
        {"name": "年假制度.txt", "mimeType": "text/plain", "buffer": ZH_TEXT.encode("utf-8")},
        {"name": XSS_NAME, "mimeType": "text/plain", "buffer": XSS_TEXT.encode()},
    ]
    writer.set_input_files("#upload-input", files)
    wait_jobs_done(writer, [f["name"] for f in files])
    writer.wait_for_selector("#documents td:has-text('vpn-guide.docx')")
    assert writer.locator("#documents tbody tr").count() == 4
    # the hostile file name is shown as text, never parsed as markup
    assert writer.locator("#documents .filename", has_text=XSS_NAME).count() == 1
    assert writer.locator("#documents img").count() == 0
    screenshot(writer, "flow-knowledge-documents")

    english = search(writer, "handbook", "How do I connect to the VPN?")
    assert {mode: hits[0] for mode, hits in english.items()} == {
        "dense": "vpn-guide.docx",
        "lexical": "vpn-guide.docx",
        "hybrid": "vpn-guide.docx",
    }
    marks = writer.locator(".column[data-mode=lexical] .hit").first.locator("mark")
    assert "vpn" in [m.lower() for m in marks.all_inner_texts()]
    screenshot(writer, "flow-search-english")
    chinese = search(writer, "handbook", "年假可以顺延吗")
    assert chinese["lexical"][0] == "年假制度.txt" and chinese["hybrid"][0] == "年假制度.txt"
    zh_marks = writer.locator(".column[data-mode=hybrid] .hit").first.locator("mark")
    assert "年假" in zh_marks.all_inner_texts()
    screenshot(writer, "flow-search-chinese")
    hostile = search(writer, "handbook", "release notes parser angle brackets")
    assert hostile["lexical"][0] == XSS_NAME
    passage = writer.locator(".column[data-mode=lexical] .hit .passage").first.inner_text()
    assert "<script>alert(2)</script>" in passage
    assert writer.locator(".column script, .column img").count() == 0

    writer.goto("/ui/#/embeddings")
    writer.fill("#embed-texts", "annual leave policy\nholiday allowance\nVPN token")
    writer.click("#embed-run")
    writer.wait_for_selector(".heatmap rect")
    assert writer.locator(".heatmap rect").count() == 9
    diagonal = writer.get_attribute(".heatmap rect[data-i='0'][data-j='0']", "data-value")
    assert abs(float(diagonal or 0) - 1.0) < 1e-3
    assert writer.locator("pre.seen").count() == 3
    screenshot(writer, "flow-embeddings")
    incidents.assert_clean(writer)

    # --- a reader sees only Search ---------------------------------------------------------
    reader = new_page(browser, base, incidents)
    sign_in(reader, reader_key)
    assert nav_pages(reader) == ["search"]
    reader.goto("/ui/#/keys")  # a hidden page by URL falls back to what the key may see
    reader.wait_for_selector("#search-query")
    incidents.assert_clean(reader)

    # --- the admin revokes the writer; the writer's next action returns to sign-in ---------
    admin.goto("/ui/#/keys")
    writer_id = writer_key.split("_")[1] if writer_key.count("_") >= 2 else None
    row = admin.locator("tr", has_text="team lead")
    row.locator("[data-revoke]").click()
    admin.click(".dialog [data-confirm]")
    admin.wait_for_selector("#toast :text-matches('revoked', 'i')")
    writer.goto("/ui/#/search")
    writer.wait_for_selector("form.signin")
    assert re.search("revoked", writer.inner_text("form.signin .error"), re.I)
    assert writer.evaluate("sessionStorage.getItem('embedgate.key')") is None

    # --- the audit page shows those actions, and the chain is intact -----------------------
    admin.goto("/ui/#/audit")
    admin.wait_for_selector("#audit-rows tbody tr")
    text = admin.inner_text("#audit-rows")
    assert "key.revoke" in text and "/v1/collections/{name}/documents" in text
    admin.locator("#audit-rows tbody tr").first.click()
    assert admin.inner_text("#audit-detail").lstrip().startswith("{")
    admin.click("#audit-verify")
    admin.wait_for_selector("#verify-result.ok")
    screenshot(admin, "flow-audit-verified")
    assert re.match(r"Chain intact: \d+ records", admin.inner_text("#verify-result"))
    incidents.assert_clean(admin)
    del writer_id
    # nothing the console did made the server fail
    records = httpx.get(
        f"{base}/v1/admin/audit", params={"limit": 10000}, headers=server.admin
    ).json()["data"]
    failed = [(r.get("route"), r.get("status")) for r in records if (r.get("status") or 0) >= 500]
    assert failed == []


def test_console_pages_at_both_widths_and_both_languages(server: Served, browser: Any) -> None:
    """Every page renders at 1280 px and 390 px without overflowing sideways, in English
    and Chinese, with no CSP violation or error; screenshots are kept as artifacts."""
    admin_key = server.admin["Authorization"].removeprefix("Bearer ")
    httpx.post(
        f"{server.base}/v1/embeddings", json={"input": ["warm the charts"]}, headers=server.admin
    )
    incidents = Incidents()
    for width in ("desktop", "phone"):
        page = new_page(browser, server.base, incidents, width)
        sign_in(page, admin_key)
        for page_name in PAGES:
            page.goto(f"/ui/#/{page_name}")
            page.wait_for_selector(f"section[data-page={page_name}]")
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{page_name} at {width} overflows by {overflow}px"
            screenshot(page, f"{page_name}-{width}")
        page.select_option("#lang", "zh-CN")
        page.goto("/ui/#/knowledge")
        page.wait_for_selector("section[data-page=knowledge]")
        assert page.inner_text("#nav a[data-page=knowledge]") == "知识库"
        page.reload()
        page.wait_for_selector("#nav a[data-page=knowledge]")
        assert page.inner_text("#nav a[data-page=knowledge]") == "知识库"  # remembered
        screenshot(page, f"knowledge-{width}-zh")
        page.select_option("#lang", "en")
        incidents.assert_clean(page)
