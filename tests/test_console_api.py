"""The console's side of the server without a browser: its static files (headers, caching,
no key, no audit noise), the small JSON endpoints it reads (/v1/me, /v1/tokenize,
/v1/admin/stats, /v1/admin/audit/verify, usage per hour), and rules on the console's own
source (one catalogue key set per language, no HTML injection sinks)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.security.audit import MemoryAuditSink
from embedgate.services.traffic import RecentTraffic
from embedgate.web.console import CONTENT_SECURITY_POLICY, ConsoleFiles
from support.servers import client_for, fake_factory

STATIC = Path(__file__).resolve().parents[1] / "src" / "embedgate" / "web" / "static"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, MemoryAuditSink]]:
    audit = MemoryAuditSink()
    app = create_app(
        Settings(data_dir=tmp_path_factory.mktemp("console")), fake_factory(), audit_sink=audit
    )
    with client_for(app) as client:
        yield client, audit


def key_for(client: TestClient, role: str) -> dict[str, str]:
    made = client.post("/v1/admin/keys", json={"name": role, "role": role})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def test_the_console_is_public_strict_and_cached_by_build(
    served: tuple[TestClient, MemoryAuditSink],
) -> None:
    client, audit = served
    before = len(audit.records)
    page = client.get("/ui/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-cache"
    assert "<script>" not in page.text and " on" not in re.sub(
        r"\s+", " ", page.text
    ).lower().replace(" one", "")
    build = ConsoleFiles.load().build
    assert f"/ui/assets/{build}/js/app.js" in page.text
    script = client.get(f"/ui/assets/{build}/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert "immutable" in script.headers["cache-control"]
    assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert client.get("/ui/assets/0000000000000000/js/app.js").status_code == 404  # old build
    assert client.get(f"/ui/assets/{build}/js/nope.js").status_code == 404
    bare = client.get("/ui", follow_redirects=False)
    assert bare.status_code == 308 and bare.headers["location"] == "/ui/"
    assert len(audit.records) == before  # static files are not audited requests
    assert client.get(f"/ui/assets/{build}/..%2F..%2F__init__.py").status_code == 404


def test_console_files_change_their_build_id(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<link href='/ui/assets/{{build}}/a.css'>")
    (tmp_path / "a.css").write_text("body{}")
    first = ConsoleFiles.load(tmp_path)
    assert first.page() == f"<link href='/ui/assets/{first.build}/a.css'>".encode()
    (tmp_path / "a.css").write_text("body{color:red}")
    assert ConsoleFiles.load(tmp_path).build != first.build


def test_console_can_be_turned_off(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, console=False), fake_factory())
    with client_for(app) as client:
        assert client.get("/ui/").status_code == 404


def test_me_says_what_the_key_may_do(served: tuple[TestClient, MemoryAuditSink]) -> None:
    client, _ = served
    me = client.get("/v1/me").json()
    assert me["role"] == "admin" and "admin" in me["permissions"]
    reader = client.get("/v1/me", headers=key_for(client, "reader")).json()
    assert reader["role"] == "reader" and reader["permissions"] == ["search"]
    writer = client.get("/v1/me", headers=key_for(client, "writer")).json()
    assert writer["permissions"] == ["embed", "search", "write"]
    assert client.get("/v1/me", headers={"Authorization": "Bearer egk_nope"}).status_code == 401


def test_tokenize_shows_the_prompted_text_and_counts(
    served: tuple[TestClient, MemoryAuditSink],
) -> None:
    client, _ = served
    answer = client.post(
        "/v1/tokenize",
        json={
            "input": ["annual leave", "vpn token"],
            "input_type": "query",
            "instruction": "Find the policy",
        },
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data[0]["text"] == "Instruct: Find the policy\nQuery:annual leave"
    embedded = client.post(
        "/v1/embeddings",
        json={
            "input": ["annual leave", "vpn token"],
            "input_type": "query",
            "instruction": "Find the policy",
        },
    ).json()
    assert sum(d["tokens"] for d in data) == embedded["usage"]["prompt_tokens"]
    refused = client.post("/v1/tokenize", json={"input": ["x"]}, headers=key_for(client, "reader"))
    assert refused.status_code == 403 and refused.json()["error"]["type"]
    wrong = client.post("/v1/tokenize", json={"input": ["x"], "model": "gpt-4"})
    assert wrong.status_code == 404 and "fake-qwen3" in wrong.json()["error"]["message"]
    assert client.post("/v1/tokenize", json={"input": []}).status_code == 400


def test_stats_usage_and_verify_for_the_admin(served: tuple[TestClient, MemoryAuditSink]) -> None:
    client, _ = served
    writer = key_for(client, "writer")
    for _ in range(3):
        assert (
            client.post("/v1/embeddings", json={"input": ["a b c"]}, headers=writer).status_code
            == 200
        )
    assert client.post("/v1/embeddings", json={"input": []}, headers=writer).status_code == 400
    client.get("/health")
    stats = client.get("/v1/admin/stats").json()
    assert len(stats["minutes"]) == 60 and stats["ready"] is True
    now = stats["minutes"][-1]
    assert now["requests"] >= 4 and now["errors_4xx"] >= 1 and now["tokens"] >= 3
    assert now["p50_ms"] is not None and now["p95_ms"] >= now["p50_ms"]
    usage = client.get("/v1/admin/usage", params={"bucket": "hour"}).json()
    writer_id = client.get("/v1/me", headers=writer).json()["subject"]
    row = next(r for r in usage["data"] if r["key_id"] == writer_id)
    assert row["requests"] == 4 and row["errors_4xx"] == 1  # 3 embedded, 1 refused
    assert len(row["series"]) == 1 and len(row["series"][0]["t"]) == 13
    assert client.get("/v1/admin/usage", params={"bucket": "week"}).status_code == 400
    verified = client.get("/v1/admin/audit/verify").json()
    assert verified["intact"] is True and verified["records"] > 5
    assert client.get("/v1/admin/stats", headers=writer).status_code == 403


def test_a_tampered_audit_log_fails_verification(tmp_path: Path) -> None:
    audit = MemoryAuditSink()
    app = create_app(Settings(data_dir=tmp_path), fake_factory(), audit_sink=audit)
    with client_for(app) as client:
        client.get("/v1/models")
        first = json.loads(audit.records[0])
        first["ts"] = "2020-01-01T00:00:00Z"  # rewritten history, hash left as it was
        audit.records[0] = json.dumps(first)
        verified = client.get("/v1/admin/audit/verify").json()
        assert verified["intact"] is False and verified["bad_line"] == 1


def test_recent_traffic_keeps_an_hour_of_minutes() -> None:
    now = [1_000_000.0]
    traffic = RecentTraffic(clock=lambda: now[0])
    traffic.request(200, 0.010)
    traffic.request(503, 0.100)
    traffic.tokens(42)
    traffic.queue(7)
    now[0] += 120
    traffic.request(404, 0.001)
    series = traffic.series()
    assert len(series) == 60 and series[-1]["errors_4xx"] == 1
    earlier = series[-3]
    assert earlier["requests"] == 2 and earlier["errors_5xx"] == 1 and earlier["tokens"] == 42
    assert earlier["queue_max"] == 7 and earlier["p95_ms"] == 100.0
    assert series[-2]["requests"] == 0 and series[-2]["p50_ms"] is None
    now[0] += 3600
    assert sum(m["requests"] for m in traffic.series()) == 0


def test_search_returns_the_terms_it_searched_for() -> None:
    from embedgate.knowledge.analysis import shared_analyzer

    # the console highlights these; jieba keeps enterprise words whole
    assert "年假" in shared_analyzer().terms("年假可以顺延吗")


def _strings(path: Path) -> set[str]:
    return set(re.findall(r'^\s*"([a-z_.A-Z]+)":', path.read_text(), re.M))


def test_both_languages_have_every_string() -> None:
    en, zh = _strings(STATIC / "js/lang/en.js"), _strings(STATIC / "js/lang/zh-CN.js")
    assert en and en == zh
    used = set()
    for script in (STATIC / "js").rglob("*.js"):
        used |= set(re.findall(r'\bt\("([a-z_.]+)"', script.read_text()))
    assert used - en == set(), "strings used but not in the catalogue"


def test_console_source_has_no_html_injection_sinks() -> None:
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|javascript:"
    )
    offenders: list[Any] = []
    for path in STATIC.rglob("*"):
        if path.is_file() and path.suffix in {".js", ".html"}:
            offenders += [f"{path.name}:{m.group()}" for m in sinks.finditer(path.read_text())]
    assert offenders == []
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
