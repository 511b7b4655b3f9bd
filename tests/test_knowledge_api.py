"""The knowledge base over HTTP with real Milvus Lite: upload -> job -> ready -> search, roles
and grants, duplicates, and hostile uploads (docs/security.md maps the case ids)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine.backends.fake import FakeBackend
from support.documents import (
    docx_with,
    docx_with_entities,
    docx_with_false_sizes,
    docx_zip_bomb,
    pdf_with_text,
)
from support.servers import client_for, fake_factory
from support.services import milvus_server

PARAGRAPHS = [
    f"Section {i}. The {topic} policy says employees must follow rule number {i} carefully."
    for i, topic in enumerate(
        ["travel", "security", "privacy", "expense", "remote work", "hiring"] * 3
    )
]
CHINESE = "机器学习是人工智能的一个分支。深度学习使用神经网络。向量数据库用于语义检索！企业知识库需要安全。"


@pytest.fixture(scope="module")
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture(scope="module", params=["embedded", "remote"])
def client(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend: FakeBackend,
) -> Iterator[TestClient]:
    """Every test here runs twice: on Milvus Lite in the data dir, and on a Milvus server
    process reached over HTTP (the code path of a Milvus cluster)."""
    with contextlib.ExitStack() as stack:
        uri = None
        if request.param == "remote":
            uri = stack.enter_context(milvus_server()).uri
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("kb"),
            milvus_uri=uri,
            kb_max_upload_bytes=2 * 1024 * 1024,
            kb_chunk_tokens=32,
            kb_chunk_overlap=4,
            failed_auth_per_minute=1000,
        )
        app = create_app(settings, fake_factory(backend))
        yield stack.enter_context(client_for(app))


def key(client: TestClient, role: str, **extra: Any) -> dict[str, str]:
    created = client.post("/v1/admin/keys", json={"name": role, "role": role, **extra})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def upload(
    client: TestClient,
    collection: str,
    name: str,
    data: bytes,
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        f"/v1/collections/{collection}/documents",
        files={"file": (name, data)},
        headers=headers or {},
    )


def wait(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()
        if job["status"] in ("succeeded", "failed"):
            return dict(job)
        time.sleep(0.05)
    raise TimeoutError(job_id)


def ingest(client: TestClient, collection: str, name: str, data: bytes) -> dict[str, Any]:
    response = upload(client, collection, name, data)
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return dict(response.json()["document"])


def test_collection_upload_search_delete(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "policies", "description": "HR"})
    assert created.status_code == 201 and created.json()["model"] == "fake-qwen3"
    assert created.json()["chunk_tokens"] == 32 and created.json()["dimensions"] == 64
    doc = ingest(client, "policies", "policies.md", "\n\n".join(PARAGRAPHS).encode())
    stored = client.get("/v1/collections/policies/documents").json()["data"]
    ready = next(d for d in stored if d["id"] == doc["id"])
    assert ready["status"] == "ready" and ready["chunks"] > 3 and ready["filename"] == "policies.md"
    for mode in ("dense", "lexical", "hybrid"):
        response = client.post(
            "/v1/collections/policies/search",
            json={"query": "privacy policy", "top_k": 3, "mode": mode},
        )
        assert response.status_code == 200, response.text
        hits = response.json()["data"]
        assert 0 < len(hits) <= 3
        assert set(hits[0]) == {
            "text",
            "score",
            "dense_score",
            "lexical_score",
            "document_id",
            "filename",
            "chunk_index",
            "page",
            "page_start",
            "page_end",
            "char_start",
            "char_end",
            "headings",
        }
        assert hits[0]["document_id"] == doc["id"] and hits[0]["filename"] == "policies.md"
        top = hits[0]
        if mode == "dense":
            assert top["dense_score"] == top["score"] and top["lexical_score"] is None
        elif mode == "lexical":
            assert top["lexical_score"] == top["score"] and top["dense_score"] is None
        else:  # the fused rank score, with each side's own score where it found the chunk
            assert top["score"] < 0.05 and top["dense_score"] is not None
            assert top["lexical_score"] is not None and top["lexical_score"] > 0
    lexical = client.post(
        "/v1/collections/policies/search", json={"query": "privacy", "mode": "lexical"}
    ).json()["data"]
    assert "privacy" in lexical[0]["text"]
    assert client.delete(f"/v1/collections/policies/documents/{doc['id']}").status_code == 200
    assert (
        client.post(
            "/v1/collections/policies/search", json={"query": "privacy", "mode": "lexical"}
        ).json()["data"]
        == []
    )
    kb = client.app.state.embedgate.knowledge  # type: ignore[attr-defined]
    info = kb.catalog.collection("policies")
    assert info is not None and kb.store.count_document(kb.store_of(info), doc["id"]) == 0
    audit = (Path(client.app.state.embedgate.settings.data_dir) / "audit.jsonl").read_text()  # type: ignore[attr-defined]
    assert '"action":"document.delete"' in audit and doc["id"] in audit


def test_chinese_lexical_search_uses_word_segmentation(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "zh"})
    ingest(client, "zh", "zh.txt", CHINESE.encode())
    hits = client.post(
        "/v1/collections/zh/search", json={"query": "神经网络", "mode": "lexical"}
    ).json()["data"]
    assert hits and "神经网络" in hits[0]["text"]


def test_pdf_and_docx_keep_pages_and_tables(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "files"})
    ingest(
        client,
        "files",
        "report.pdf",
        pdf_with_text(["Alpha page about budgets " * 12, "Beta page about audits " * 12]),
    )
    hits = client.post(
        "/v1/collections/files/search", json={"query": "audits", "mode": "lexical"}
    ).json()["data"]
    assert hits[0]["page"] == 2
    ingest(
        client,
        "files",
        "t.docx",
        docx_with("Quarterly", ["Numbers follow."], [["Region", "Revenue"], ["Nordics", "42"]]),
    )
    hits = client.post(
        "/v1/collections/files/search", json={"query": "Nordics", "mode": "lexical"}
    ).json()["data"]
    assert "Nordics | 42" in hits[0]["text"]


def test_roles_on_the_knowledge_base(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "roles"})
    reader, writer = key(client, "reader"), key(client, "writer")
    assert client.post("/v1/collections", json={"name": "nope"}, headers=reader).status_code == 403
    assert upload(client, "roles", "a.txt", b"reader text", reader).status_code == 403
    response = upload(client, "roles", "a.txt", b"writer text here", writer)
    assert response.status_code == 202
    doc_id = response.json()["document"]["id"]
    wait(client, response.json()["job"]["id"], writer)
    assert (
        client.post(
            "/v1/collections/roles/search", json={"query": "writer"}, headers=reader
        ).status_code
        == 200
    )
    assert (
        client.delete(f"/v1/collections/roles/documents/{doc_id}", headers=writer).status_code
        == 403
    )
    assert client.delete("/v1/collections/roles", headers=writer).status_code == 403
    assert client.delete("/v1/collections/roles").status_code == 200
    assert client.get("/v1/collections/roles").status_code == 404


def test_collection_grants_hide_other_collections_as_404(client: TestClient) -> None:
    for name in ("team-a", "team-b"):
        client.post("/v1/collections", json={"name": name})
    job = upload(client, "team-b", "b.txt", b"secret plans of team b").json()["job"]["id"]
    wait(client, job)
    limited = key(client, "writer", collections=["team-a"])
    missing = client.post(
        "/v1/collections/does-not-exist/search", json={"query": "x"}, headers=limited
    )
    hidden = client.post("/v1/collections/team-b/search", json={"query": "x"}, headers=limited)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"].replace("team-b", "X") == missing.json()["error"][
        "message"
    ].replace("does-not-exist", "X")
    for path in ("/v1/collections/team-b", "/v1/collections/team-b/documents", f"/v1/jobs/{job}"):
        assert client.get(path, headers=limited).status_code == 404
    assert upload(client, "team-b", "x.txt", b"x", limited).status_code == 404
    names = [c["name"] for c in client.get("/v1/collections", headers=limited).json()["data"]]
    assert names == ["team-a"]
    assert (
        client.post(
            "/v1/collections/team-a/search", json={"query": "x"}, headers=limited
        ).status_code
        == 200
    )


def test_exact_and_near_duplicates(client: TestClient, backend: FakeBackend) -> None:
    client.post("/v1/collections", json={"name": "dups"})
    text = "\n\n".join(PARAGRAPHS).encode()
    first = ingest(client, "dups", "one.txt", text)
    embedded = len(backend.seen)
    again = upload(client, "dups", "copy.txt", text)
    assert again.status_code == 202 and again.json()["document"]["status"] == "duplicate"
    assert (
        again.json()["job"]["status"] == "succeeded" and len(backend.seen) == embedded
    )  # not embedded again
    near = ingest(
        client, "dups", "edited.txt", text + b"\n\nOne more closing paragraph about nothing."
    )
    found = {
        d["document_id"]: d for d in client.get("/v1/collections/dups/duplicates").json()["data"]
    }
    assert found[again.json()["document"]["id"]]["kind"] == "exact"
    assert found[near["id"]]["kind"] == "near"
    assert found[near["id"]]["of"][0]["document_id"] == first["id"]


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "evil\x00.txt", "a" * 1000 + ".txt", "..\\..\\boot.ini.txt"]
)
def test_file_names_are_data_never_paths_or_markup(client: TestClient, name: str) -> None:
    client.post("/v1/collections", json={"name": "names"})
    response = upload(client, "names", name, f"harmless content {name!r}".encode())
    assert response.status_code in (202, 415)
    if response.status_code == 202:
        document = response.json()["document"]
        assert "\x00" not in document["filename"] and len(document["filename"]) <= 255
        uploads = Path(client.app.state.embedgate.settings.data_dir) / "uploads"  # type: ignore[attr-defined]
        files = {p.name for p in uploads.iterdir()}
        assert f"{document['id']}.bin" in files and all(f.startswith("doc_") for f in files)
        wait(client, response.json()["job"]["id"])
    assert not Path("/etc/passwd.bin").exists()
    assert client.get("/health").status_code == 200


def test_zip_bombs_and_xml_entities_fail_their_job_in_the_parse_worker(
    client: TestClient,
) -> None:
    client.post("/v1/collections", json={"name": "bombs"})
    for name, data, reason in [
        ("bomb.docx", docx_zip_bomb(), "zip bomb"),
        ("liar.docx", docx_with_false_sizes(), "DOCX"),
        ("lol.docx", docx_with_entities(), "entities"),
    ]:
        accepted = upload(client, "bombs", name, data)
        assert accepted.status_code == 202
        job = wait(client, accepted.json()["job"]["id"])
        assert job["status"] == "failed" and reason in job["error"], job
    assert client.get("/health").status_code == 200


def test_empty_unsupported_and_oversized_uploads_are_refused(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "limits"})
    assert upload(client, "limits", "empty.txt", b"").status_code == 400
    assert upload(client, "limits", "tool.exe", b"MZ\x90\x00").status_code == 415
    big = upload(client, "limits", "big.txt", b"x" * (3 * 1024 * 1024))
    assert big.status_code == 413
    assert client.post("/v1/collections/limits/documents", data={"nofile": "1"}).status_code == 400
    assert client.get("/health").status_code == 200


def test_the_parse_time_limit_fails_only_that_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kb_parse_timeout_s=0.001)
    app = create_app(settings, fake_factory())
    with client_for(app) as c:
        c.post("/v1/collections", json={"name": "slow"})
        response = upload(c, "slow", "spin.pdf", pdf_with_text(["word " * 300] * 200))
        job = wait(c, response.json()["job"]["id"])
        assert job["status"] == "failed" and "longer than" in job["error"]
        doc = c.get("/v1/collections/slow/documents").json()["data"][0]
        assert doc["status"] == "failed"
        assert c.post("/v1/embeddings", json={"input": "still serving"}).status_code == 200


def test_search_refuses_another_model_or_dimension(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "mixed", "dimensions": 32})
    ingest(client, "mixed", "m.txt", b"matryoshka vectors at 32 dims")
    ok = client.post("/v1/collections/mixed/search", json={"query": "vectors", "mode": "dense"})
    assert ok.status_code == 200 and ok.json()["data"]
    wrong_dims = client.post("/v1/collections/mixed/search", json={"query": "v", "dimensions": 64})
    assert (
        wrong_dims.status_code == 400 and "32-dimensional" in wrong_dims.json()["error"]["message"]
    )
    wrong_model = client.post(
        "/v1/collections/mixed/search", json={"query": "v", "model": "other-model"}
    )
    assert (
        wrong_model.status_code == 409
        and "different models" in wrong_model.json()["error"]["message"]
    )


def test_bad_collection_requests(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "../x"}).status_code == 400
    assert (
        client.post("/v1/collections", json={"name": "ok1", "chunk_tokens": 4}).status_code == 400
    )
    assert client.post("/v1/collections", json={"name": "ok2", "dimensions": 31}).status_code == 400
    client.post("/v1/collections", json={"name": "twice"})
    assert client.post("/v1/collections", json={"name": "twice"}).status_code == 409
    assert (
        client.post(
            "/v1/collections/twice/search", json={"query": "x", "mode": "magic"}
        ).status_code
        == 400
    )
    assert (
        client.post("/v1/collections/twice/search", json={"query": "x", "top_k": 0}).status_code
        == 400
    )


def test_embeddings_survive_an_unavailable_vector_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, milvus_uri=str(tmp_path / "missing" / "dir" / "m.db"))
    (tmp_path / "missing").write_text("a file where a directory should be")
    with client_for(create_app(settings, fake_factory())) as c:
        assert c.post("/v1/embeddings", json={"input": "still works"}).status_code == 200
        response = c.get("/v1/collections")
        assert response.status_code == 503 and "milvus_uri" in response.json()["error"]["message"]


def test_queries_get_the_instruction_documents_never_do(
    client: TestClient, backend: FakeBackend
) -> None:
    client.post("/v1/collections", json={"name": "prompts"})
    before = len(backend.seen)
    ingest(client, "prompts", "p.txt", b"plain document text about leave")
    documents = backend.seen[before:]
    instruct = backend.word_id("Instruct:")
    assert documents and all(instruct not in seq for seq in documents)
    mark = len(backend.seen)
    client.post("/v1/collections/prompts/search", json={"query": "leave", "mode": "dense"})
    default = backend.seen[mark:]
    assert any(instruct in seq and backend.word_id("Given") in seq for seq in default)
    mark = len(backend.seen)
    client.post(
        "/v1/collections/prompts/search",
        json={"query": "leave", "mode": "dense", "instruction": "Find HR rules"},
    )
    custom = backend.seen[mark:]
    assert any(
        backend.word_id("HR") in seq and backend.word_id("Given") not in seq for seq in custom
    )
