"""Ingest jobs at scale, on real Milvus Lite (embedded and as a server): collections take
turns, deletes call work off, reindexing switches without downtime, and search results say
where a passage comes from."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine.backend import BackendDescription
from embedgate.engine.backends.fake import FakeBackend, fake_spec
from embedgate.knowledge.naming import generation_of, legacy_store_name
from support.documents import docx_with_false_sizes, docx_zip_bomb
from support.processes import serving
from support.servers import client_for, fake_factory, wait_until

BIG = "\n\n".join(f"Paragraph {i}: " + "quarterly revenue and costs " * 15 for i in range(3000))


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(milvus_uri: str, tmp_path: Any, backend: FakeBackend) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        milvus_uri=milvus_uri,
        kb_chunk_tokens=32,
        kb_chunk_overlap=0,
        failed_auth_per_minute=1000,
    )
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(client_for(create_app(settings, fake_factory(backend))))


def upload(client: TestClient, collection: str, name: str, text: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/collections/{collection}/documents", files={"file": (name, text.encode())}
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def finished(client: TestClient, job_id: str, seconds: float = 60) -> dict[str, Any]:
    assert wait_until(lambda: job(client, job_id)["status"] not in ("queued", "running"), seconds)
    return job(client, job_id)


def runner(client: TestClient) -> Any:
    return client.app.state.embedgate.knowledge.runner  # type: ignore[attr-defined]


def embedding(client: TestClient, job_id: str) -> None:
    assert wait_until(lambda: job(client, job_id)["stage"] == "embedding", 30)


def test_a_small_upload_is_not_stuck_behind_a_big_one(
    client: TestClient, backend: FakeBackend
) -> None:
    backend.delay = 0.4  # each forward pass: the big job takes many seconds
    for name in ("archive", "handbook"):
        client.post("/v1/collections", json={"name": name})
    big = upload(client, "archive", "big.txt", BIG)
    embedding(client, big["job"]["id"])
    small = upload(client, "handbook", "small.txt", "Annual leave is fifteen days.")
    started = time.monotonic()
    done = finished(client, small["job"]["id"], 20)
    assert done["status"] == "succeeded"
    assert time.monotonic() - started < 10
    other = job(client, big["job"]["id"])  # it took turns rather than waiting for all of it
    assert other["status"] == "running" or other["updated_at"] > done["updated_at"]
    backend.delay = 0
    assert finished(client, big["job"]["id"], 120)["status"] == "succeeded"


@pytest.mark.parametrize("how", ["document", "collection", "job"])
def test_deleting_calls_the_work_off(client: TestClient, backend: FakeBackend, how: str) -> None:
    backend.delay = 0.4
    client.post("/v1/collections", json={"name": "archive"})
    accepted = upload(client, "archive", "big.txt", BIG)
    job_id, doc_id = accepted["job"]["id"], accepted["document"]["id"]
    embedding(client, job_id)
    if how == "document":
        response = client.delete(f"/v1/collections/archive/documents/{doc_id}")
    elif how == "collection":
        response = client.delete("/v1/collections/archive")
    else:
        response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    started = time.monotonic()
    assert wait_until(lambda: runner(client).idle.is_set(), 5), "the job kept working"
    assert time.monotonic() - started < 5
    if how == "job":
        assert response.json()["status"] == "cancelled"
        document = client.get("/v1/collections/archive/documents").json()["data"][0]
        assert document["status"] == "failed" and "cancelled" in document["error"]
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 409
        hits = client.post(
            "/v1/collections/archive/search", json={"query": "quarterly", "mode": "lexical"}
        ).json()["data"]
        assert hits == []
    # the runner goes on with other work
    backend.delay = 0
    client.post("/v1/collections", json={"name": "next"})
    after = upload(client, "next", "n.txt", "Next document.")
    assert finished(client, after["job"]["id"])["status"] == "succeeded"


def test_results_say_where_the_passage_is(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "hr"})
    text = (
        "# 员工手册\n\n## 第三章 考勤\n\n### 3.2 请假\n\n"
        "年假申请须至少提前三个工作日在人事系统中提交。\n"
    )
    accepted = upload(client, "hr", "handbook.md", text)
    assert finished(client, accepted["job"]["id"])["status"] == "succeeded"
    hit = client.post(
        "/v1/collections/hr/search", json={"query": "年假申请", "mode": "lexical"}
    ).json()["data"][0]
    assert hit["headings"] == ["员工手册", "第三章 考勤", "3.2 请假"]
    assert (hit["page_start"], hit["page_end"]) == (1, 1)
    assert text[hit["char_start"] : hit["char_end"]] == hit["text"]


def test_reindex_switches_generations_and_keeps_search_answering(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "kb"})
    for i in range(3):
        accepted = upload(client, "kb", f"d{i}.txt", f"Document {i} about the VPN and 内网.")
        assert finished(client, accepted["job"]["id"])["status"] == "succeeded"
    kb = client.app.state.embedgate.knowledge  # type: ignore[attr-defined]
    before = kb.catalog.collection("kb").store_name

    def search() -> list[str]:
        response = client.post("/v1/collections/kb/search", json={"query": "内网 VPN"})
        assert response.status_code == 200, response.text
        return sorted(h["document_id"] for h in response.json()["data"])

    expected = search()
    assert len(expected) == 3
    started = client.post("/v1/collections/kb/reindex", json={})
    assert started.status_code == 202, started.text
    while job(client, started.json()["id"])["status"] == "running":
        assert search() == expected  # answered throughout, from one generation or the other
    assert job(client, started.json()["id"])["status"] == "succeeded"
    after = kb.catalog.collection("kb").store_name
    assert generation_of(after) == generation_of(before) + 1
    assert search() == expected
    assert not kb.store.client.has_collection(before)
    wrong = client.post("/v1/collections/kb/reindex", json={"model": "another-model"})
    assert wrong.status_code == 409 and "--model another-model" in wrong.json()["error"]["message"]


def test_a_collection_from_before_0_5_names_the_command_then_reindexes(
    client: TestClient,
) -> None:
    """Made by the previous version: Milvus's own analyzer, no page_end, no store_name."""
    from pymilvus import DataType, Function, FunctionType

    from embedgate.storage.catalog import CollectionInfo

    kb = client.app.state.embedgate.knowledge  # type: ignore[attr-defined]
    milvus = kb.store.client
    old = legacy_store_name("legacy")
    schema = milvus.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=80)
    schema.add_field("document_id", DataType.VARCHAR, max_length=40)
    for field in ("chunk_index", "page", "start", "end"):
        schema.add_field(field, DataType.INT64)
    schema.add_field("headings", DataType.VARCHAR, max_length=2000)
    schema.add_field(
        "text",
        DataType.VARCHAR,
        max_length=65535,
        enable_analyzer=True,
        analyzer_params={"tokenizer": "jieba", "filter": ["lowercase"]},
    )
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=64)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=["sparse"],
        )
    )
    index = milvus.prepare_index_params()
    index.add_index("dense", index_type="AUTOINDEX", metric_type="IP")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    milvus.create_collection(old, schema=schema, index_params=index)
    text = "The old handbook says the VPN is required for the intranet."
    milvus.insert(
        old,
        [
            {
                "id": "doc_old:0",
                "document_id": "doc_old",
                "chunk_index": 0,
                "page": 1,
                "start": 0,
                "end": len(text),
                "headings": "Handbook > IT",
                "text": text,
                "dense": [1.0] + [0.0] * 63,
            }
        ],
    )
    kb.catalog.add_collection(CollectionInfo("legacy", "", "fake-qwen3", 64, 32, 0, "admin"))
    kb.catalog.add_document(
        "doc_old", collection="legacy", filename="old.txt", digest="x", size=1, status="ready"
    )
    kb.catalog.update_document("doc_old", chunks=1)
    refused = client.post("/v1/collections/legacy/search", json={"query": "VPN"})
    assert refused.status_code == 409
    assert "embedgate kb reindex legacy" in refused.json()["error"]["message"]
    warnings = client.get("/v1/collections/legacy").json()["warnings"]
    assert any("embedgate kb reindex legacy" in w for w in warnings)
    started = client.post("/v1/collections/legacy/reindex", json={})
    assert finished(client, started.json()["id"])["status"] == "succeeded"
    hits = client.post(
        "/v1/collections/legacy/search", json={"query": "VPN intranet", "mode": "lexical"}
    ).json()["data"]
    assert [h["text"] for h in hits] == [text]
    assert hits[0]["headings"] == ["Handbook", "IT"]
    assert client.get("/v1/collections/legacy").json()["warnings"] == []


def test_an_english_only_model_leans_on_lexical_for_chinese(milvus_uri: str, tmp_path: Any) -> None:
    backend = FakeBackend(dataclasses.replace(fake_spec(), languages=("en",)))
    settings = Settings(
        data_dir=tmp_path / "d", milvus_uri=milvus_uri, kb_chunk_tokens=32, kb_chunk_overlap=0
    )
    with client_for(create_app(settings, fake_factory(backend))) as client:
        created = client.post("/v1/collections", json={"name": "zh"})
        assert created.status_code == 201, created.text
        for i, text in enumerate(
            ["员工每年享有十五天年假。", "访客须在前台登记。", "内网须通过VPN连接。"]
        ):
            accepted = upload(client, "zh", f"{i}.txt", text)
            assert finished(client, accepted["job"]["id"])["status"] == "succeeded"
        info = client.get("/v1/collections/zh").json()
        assert info["languages"] == {"zh": 3}
        assert any("does not cover" in w for w in info["warnings"])

        def top(mode: str, **extra: Any) -> str:
            body = {"query": "内网", "mode": mode, **extra}
            return str(
                client.post("/v1/collections/zh/search", json=body).json()["data"][0]["text"]
            )

        assert top("hybrid") == top("lexical") == "内网须通过VPN连接。"
        # the request can still set its own weights
        response = client.post(
            "/v1/collections/zh/search",
            json={"query": "内网", "weights": {"dense": 1, "lexical": 0}},
        )
        assert response.status_code == 200
        assert response.json()["data"][0]["text"] == top("dense")
        bad = client.post(
            "/v1/collections/zh/search", json={"query": "内网", "weights": {"dense": -1}}
        )
        assert bad.status_code == 400


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_archives_never_inflate_inside_the_server(tmp_path: Path) -> None:
    """A DOCX whose headers hide a 100 MB part, and an honest 300 MB bomb: both fail their
    job with a reason, and the server process's peak memory moves less than 50 MB (they
    are inflated, and given up on, in the parse worker)."""
    with serving(tmp_path / "data") as served:
        headers = served.admin
        assert (
            httpx.post(
                f"{served.base}/v1/collections", headers=headers, json={"name": "files"}
            ).status_code
            == 201
        )
        warm = httpx.post(
            f"{served.base}/v1/collections/files/documents",
            headers=headers,
            files={"file": ("warm.txt", b"Warm up the parse worker.")},
        ).json()
        assert wait_until(
            lambda: (
                httpx.get(f"{served.base}/v1/jobs/{warm['job']['id']}", headers=headers).json()[
                    "status"
                ]
                == "succeeded"
            ),
            60,
        )
        before = _peak_rss_mb(served.process.pid)
        for name, data in [("liar.docx", docx_with_false_sizes()), ("bomb.docx", docx_zip_bomb())]:
            accepted = httpx.post(
                f"{served.base}/v1/collections/files/documents",
                headers=headers,
                files={"file": (name, data)},
                timeout=60,
            )
            assert accepted.status_code == 202, accepted.text
            job_url = f"{served.base}/v1/jobs/{accepted.json()['job']['id']}"
            assert wait_until(
                lambda url=job_url: httpx.get(url, headers=headers).json()["status"] == "failed",
                60,
            )
            assert httpx.get(job_url, headers=headers).json()["error"]
        assert _peak_rss_mb(served.process.pid) - before < 50
        assert httpx.get(f"{served.base}/health").status_code == 200


class _Fingerprinted(FakeBackend):
    """A backend whose served model can change under the same name (an upstream swap)."""

    def __init__(self) -> None:
        super().__init__()
        self.served = "aaaa1111bbbb2222"

    def describe(self) -> BackendDescription:
        return dataclasses.replace(super().describe(), fingerprint=self.served)


def test_a_collection_refuses_another_model_behind_the_same_name(
    milvus_uri: str, tmp_path: Path
) -> None:
    backend = _Fingerprinted()
    settings = Settings(
        data_dir=tmp_path / "d", milvus_uri=milvus_uri, kb_chunk_tokens=32, kb_chunk_overlap=0
    )
    with client_for(create_app(settings, fake_factory(backend))) as client:
        created = client.post("/v1/collections", json={"name": "kb"})
        assert created.json()["fingerprint"] == "aaaa1111bbbb2222"
        accepted = upload(client, "kb", "a.txt", "Annual leave is fifteen days.")
        assert finished(client, accepted["job"]["id"])["status"] == "succeeded"
        backend.served = "cccc3333dddd4444"  # the upstreams now serve another model
        refused = client.post("/v1/collections/kb/search", json={"query": "leave"})
        assert refused.status_code == 409 and "cccc3333dddd4444" in refused.text
        late = upload(client, "kb", "b.txt", "Sick leave is ten days.")
        job_row = finished(client, late["job"]["id"])
        assert job_row["status"] == "failed" and "different models" in job_row["error"]
