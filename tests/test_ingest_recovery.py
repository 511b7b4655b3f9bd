"""kill -9 in the middle of an ingest leaves no half-indexed document: after a restart the job
is resumed from the stored upload (partial chunks removed first) and finishes cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from embedgate.knowledge.ingest import IngestRunner, IngestSettings
from embedgate.knowledge.parsers import ParseLimits
from embedgate.knowledge.vector_store import ChunkRow, MilvusVectorStore
from embedgate.storage.catalog import Catalog, CollectionInfo
from embedgate.storage.database import open_database
from support.servers import wait_ready
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EMBEDGATE_DATA_DIR": str(data_dir),
        "EMBEDGATE_KB_CHUNK_TOKENS": "48",
        "EMBEDGATE_KB_CHUNK_OVERLAP": "4",
        "EMBEDGATE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(lambda p: httpx.get(f"http://127.0.0.1:{port}{p}", timeout=5), timeout=180)
    return proc


def test_kill_9_mid_ingest_then_restart(tmp_path: Path) -> None:
    port = free_port()
    server = start(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {(tmp_path / 'admin.key').read_text().strip()}"}
    try:
        assert (
            httpx.post(base + "/v1/collections", json={"name": "big"}, headers=headers).status_code
            == 201
        )
        text = "\n\n".join(
            f"Paragraph {i} talks about topic {i % 37} with several more words."
            for i in range(3000)
        )
        text += "\n\nThe final paragraph mentions the zebracorn."
        accepted = httpx.post(
            base + "/v1/collections/big/documents",
            headers=headers,
            files={"file": ("big.txt", text.encode())},
            timeout=60,
        ).json()
        job_id, doc_id = accepted["job"]["id"], accepted["document"]["id"]
        deadline = time.monotonic() + 120
        while True:
            job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()
            if job["stage"] == "embedding" and job["progress"] > 0.15:
                break
            assert job["status"] != "succeeded", "ingest finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)

    server = start(tmp_path, port)
    try:
        document = httpx.get(f"{base}/v1/collections/big/documents", headers=headers).json()[
            "data"
        ][0]
        assert document["id"] == doc_id and document["status"] != "ready"
        response = httpx.post(
            f"{base}/v1/collections/big/search",
            headers=headers,
            json={"query": "Paragraph topic", "mode": "lexical"},
        )
        assert response.status_code == 200, response.text
        search = response.json()["data"]
        assert search == []  # nothing of the half-indexed document is visible
        deadline = time.monotonic() + 240
        while (job := httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json())[
            "status"
        ] != "succeeded":
            assert job["status"] != "failed", job
            assert time.monotonic() < deadline
            time.sleep(0.2)
        document = httpx.get(f"{base}/v1/collections/big/documents", headers=headers).json()[
            "data"
        ][0]
        assert document["status"] == "ready" and document["chunks"] > 100
        hits = httpx.post(
            f"{base}/v1/collections/big/search",
            headers=headers,
            json={"query": "zebracorn", "mode": "lexical"},
        ).json()["data"]
        assert hits and "zebracorn" in hits[0]["text"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_recover_removes_partial_chunks_and_fails_jobs_without_upload(
    tmp_path: Path, milvus_uri: str
) -> None:
    catalog = Catalog(open_database(f"sqlite:///{tmp_path / 'c.db'}"))
    store = MilvusVectorStore(milvus_uri)
    store.ensure_collection("c", 4)
    catalog.add_collection(CollectionInfo("c", "", "m", 4, 32, 4, "me", store_name="c"))
    runner = IngestRunner(
        catalog, store, lambda model: None, IngestSettings(tmp_path / "up", ParseLimits())
    )
    for doc in ("doc_a", "doc_b"):
        catalog.add_document(
            doc, collection="c", filename=f"{doc}.txt", digest=doc, size=1, status="indexing"
        )
        catalog.add_job(f"job_{doc}", document_id=doc, collection="c")
        catalog.update_job(f"job_{doc}", status="running")
        store.upsert("c", [ChunkRow(f"{doc}:0", doc, 0, "partial", 1, 1, 0, 7, (), [1, 0, 0, 0])])
    (tmp_path / "up").mkdir()
    runner.upload_path("doc_a").write_bytes(b"the upload survived")
    resumed = runner.recover()
    assert resumed == ["job_doc_a"]
    assert store.count_document("c", "doc_a") == 0 and store.count_document("c", "doc_b") == 0
    assert catalog.job("job_doc_a")["status"] == "queued"  # type: ignore[index]
    failed = catalog.job("job_doc_b")
    assert failed is not None and failed["status"] == "failed" and "upload" in failed["error"]
    assert catalog.document("doc_b")["status"] == "failed"  # type: ignore[index]
    store.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_finished_job_and_its_ready_document_are_one_write(tmp_path: Path, database: str) -> None:
    """A client polls the job and then reads the document: the document must be ready the
    moment the job says succeeded (CI saw `indexing` after `succeeded` under load), and a
    job cancelled meanwhile must not make its document ready."""
    from support.services import postgres_server

    def check(url: str) -> None:
        catalog = Catalog(open_database(url))
        catalog.add_collection(CollectionInfo("c", "", "m", 4, 32, 4, "me", store_name="c"))
        for doc in ("doc_done", "doc_cancelled"):
            catalog.add_document(
                doc, collection="c", filename=f"{doc}.txt", digest=doc, size=1, status="indexing"
            )
            catalog.add_job(f"job_{doc}", document_id=doc, collection="c", status="running")
        catalog.update_job("job_doc_cancelled", status="cancelled")
        assert catalog.finish_document_job(
            "job_doc_done", doc_id="doc_done", status="ready", chunks=3
        )
        assert not catalog.finish_document_job(
            "job_doc_cancelled", doc_id="doc_cancelled", status="ready", chunks=3
        )
        done, cancelled = catalog.document("doc_done"), catalog.document("doc_cancelled")
        assert done is not None and (done["status"], done["chunks"]) == ("ready", 3)
        assert catalog.job("job_doc_done")["status"] == "succeeded"  # type: ignore[index]
        assert cancelled is not None and cancelled["status"] == "indexing"
        assert catalog.job("job_doc_cancelled")["status"] == "cancelled"  # type: ignore[index]

    if database == "sqlite":
        check(f"sqlite:///{tmp_path / 'c.db'}")
    else:
        with postgres_server() as url:
            check(url)
