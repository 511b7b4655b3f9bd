"""Three models in one `embedgate serve` (MiniLM embeddings, a cross-encoder and a Qwen3
reranker), reached over HTTP: /v1/rerank in the Cohere / Jina / Open WebUI shape, routing by
`model`, clear errors, keys and limits, and one model's process killed while the others serve."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.processes import Served, serving
from support.rerankers import (
    INSTRUCTION,
    QUERY,
    reference_cross_encoder_scores,
    reference_qwen3_scores,
)
from support.servers import wait_until

pytestmark = pytest.mark.slow  # a real server with three models

DOCUMENTS = [
    "Employees get fifteen days of annual leave per year.",
    "The VPN must be used for every connection to the internal network.",
    "年假为每年十五天，病假另计。",
    "Sick leave is ten days.",
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_dir: Path,
    cross_encoder_dir: Path,
    qwen3_reranker_dir: Path,
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("rerank-api")
    models = [minilm_dir, cross_encoder_dir, qwen3_reranker_dir]
    args = [part for model in models for part in ("--model", str(model))]
    with serving(root / "data", *args) as served:
        assert wait_until(lambda: _all_ready(served), 120), _get(served, "/ready").text
        yield served


def _get(served: Served, path: str) -> httpx.Response:
    return httpx.get(served.base + path, headers=served.admin, timeout=30)


def _post(served: Served, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        served.base + path, json=body, headers={**served.admin, **headers}, timeout=60
    )


def _all_ready(served: Served) -> bool:
    reply = httpx.get(served.base + "/ready", timeout=5)
    return reply.status_code == 200 and set(reply.json()["models"].values()) == {"ready"}


def test_models_lists_every_model_with_its_task(server: Served) -> None:
    data = _get(server, "/v1/models").json()["data"]
    tasks = {m["id"]: m["task"] for m in data}
    assert tasks == {"model": "embed", "ms-marco-tiny": "rerank", "Qwen3-Reranker-tiny": "rerank"}
    kinds = {m["id"]: m.get("kind") for m in data if m["task"] == "rerank"}
    assert kinds == {"ms-marco-tiny": "cross-encoder", "Qwen3-Reranker-tiny": "qwen3"}
    assert set(_get(server, "/ready").json()["models"]) == set(tasks)


def test_cross_encoder_rerank_in_the_cohere_shape(server: Served, cross_encoder_dir: Path) -> None:
    reply = _post(
        server,
        "/v1/rerank",
        {"model": "ms-marco-tiny", "query": QUERY, "documents": DOCUMENTS},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "ms-marco-tiny" and body["usage"]["total_tokens"] > len(DOCUMENTS)
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)  # best first
    want = reference_cross_encoder_scores(cross_encoder_dir, [(QUERY, d) for d in DOCUMENTS])
    got = np.zeros(len(DOCUMENTS))
    for r in results:
        got[r["index"]] = r["relevance_score"]
    assert np.abs(got - np.array(want)).max() <= 1e-5
    assert "document" not in results[0]


def test_documents_as_objects_top_n_and_returned_text(server: Served) -> None:
    reply = _post(
        server,
        "/v1/rerank",
        {
            "model": "ms-marco-tiny",
            "query": QUERY,
            "documents": [{"text": d, "id": str(i)} for i, d in enumerate(DOCUMENTS)],
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert len(results) == 2
    for r in results:
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}


def test_qwen3_reranker_with_an_instruction(server: Served, qwen3_reranker_dir: Path) -> None:
    reply = _post(
        server,
        "/v1/rerank",
        {
            "model": "Qwen3-Reranker-tiny",
            "query": QUERY,
            "documents": DOCUMENTS,
            "instruction": INSTRUCTION,
        },
    )
    assert reply.status_code == 200, reply.text
    got = np.zeros(len(DOCUMENTS))
    for r in reply.json()["results"]:
        got[r["index"]] = r["relevance_score"]
    pairs = [(QUERY, d) for d in DOCUMENTS]
    # the engine's limit for the tiny model: its 512 positions (the card says 8192)
    want = reference_qwen3_scores(qwen3_reranker_dir, pairs, INSTRUCTION, 512)
    assert np.abs(got - np.array(want)).max() <= 1e-5


def test_the_first_reranker_answers_when_no_model_is_named(server: Served) -> None:
    """Open WebUI's external reranker posts {model, query, documents, top_n}; a client that
    leaves the model out gets the first reranker."""
    reply = _post(server, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert reply.status_code == 200 and reply.json()["model"] == "ms-marco-tiny"
    assert len(reply.json()["results"]) == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "nope", "query": QUERY, "documents": ["x"]}, 404, "model_not_found"),
        ({"model": "model", "query": QUERY, "documents": ["x"]}, 400, "invalid_request"),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": []}, 400, None),
        ({"model": "ms-marco-tiny", "documents": ["x"]}, 400, None),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": [3]}, 400, None),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": ["x"], "top_n": 0}, 400, None),
        (
            {"model": "ms-marco-tiny", "query": QUERY, "documents": ["x"], "instruction": "Be"},
            400,
            "invalid_request",
        ),
    ],
)
def test_bad_rerank_requests_get_a_clear_4xx(
    server: Served, body: dict[str, object], status: int, code: str | None
) -> None:
    reply = _post(server, "/v1/rerank", body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_embeddings_naming_a_reranker_is_a_400(server: Served) -> None:
    reply = _post(server, "/v1/embeddings", {"model": "ms-marco-tiny", "input": "x"})
    assert reply.status_code == 400 and "reranker" in reply.json()["error"]["message"]
    assert _post(server, "/v1/embeddings", {"input": "x"}).status_code == 200


def test_rerank_needs_a_key_with_the_embed_permission(server: Served) -> None:
    anonymous = httpx.post(server.base + "/v1/rerank", json={"query": QUERY, "documents": ["x"]})
    assert anonymous.status_code == 401
    made = _post(server, "/v1/admin/keys", {"name": "prom", "role": "monitor"})
    assert made.status_code == 201, made.text
    monitor = {"Authorization": f"Bearer {made.json()['key']}"}
    refused = httpx.post(
        server.base + "/v1/rerank", json={"query": QUERY, "documents": ["x"]}, headers=monitor
    )
    assert refused.status_code == 403


def test_a_killed_reranker_leaves_the_other_models_serving(server: Served) -> None:
    """SIGKILL the cross-encoder's model process: embeddings and the other reranker keep
    answering meanwhile, and the cross-encoder is back (self-tested) soon after."""
    children = {
        _command(pid).split()[-1]: pid
        for pid in _model_processes(server.process.pid)
        if "model_process" in _command(pid)
    }
    # one model process per model, named on its command line
    assert set(children) == {"model", "ms-marco-tiny", "Qwen3-Reranker-tiny"}
    cross = children["ms-marco-tiny"]
    os.kill(cross, signal.SIGKILL)
    assert _post(server, "/v1/embeddings", {"input": "still here"}).status_code == 200
    qwen = _post(
        server, "/v1/rerank", {"model": "Qwen3-Reranker-tiny", "query": QUERY, "documents": ["x"]}
    )
    assert qwen.status_code == 200, qwen.text
    assert wait_until(lambda: _all_ready(server), 120)
    again = _post(
        server, "/v1/rerank", {"model": "ms-marco-tiny", "query": QUERY, "documents": ["x"]}
    )
    assert again.status_code == 200, again.text
    assert cross not in _model_processes(server.process.pid)  # replaced by a new process


def _model_processes(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_knowledge_search_reranks_its_candidates(server: Served, cross_encoder_dir: Path) -> None:
    from support.servers import wait_job_done

    with httpx.Client(base_url=server.base, headers=server.admin, timeout=60) as http:
        assert http.post("/v1/collections", json={"name": "policies"}).status_code == 201
        for i, text in enumerate(DOCUMENTS):
            up = http.post(
                "/v1/collections/policies/documents",
                files={"file": (f"p{i}.txt", text.encode())},
            )
            assert up.status_code == 202, up.text
            assert wait_job_done(http, up.json()["job"]["id"])["status"] == "succeeded"
        search = "/v1/collections/policies/search"
        plain = http.post(search, json={"query": QUERY, "top_k": 3}).json()["data"]
        assert len(plain) == 3 and all("rerank_score" not in hit for hit in plain)
        reply = http.post(
            search,
            json={
                "query": QUERY,
                "top_k": 3,
                "rerank": {"model": "ms-marco-tiny", "candidates": len(DOCUMENTS)},
            },
        )
        assert reply.status_code == 200, reply.text
        hits = reply.json()["data"]
        scores = [hit["rerank_score"] for hit in hits]
        assert len(hits) == 3 and scores == sorted(scores, reverse=True)
        want = reference_cross_encoder_scores(
            cross_encoder_dir, [(QUERY, hit["text"]) for hit in hits]
        )
        assert np.abs(np.array(scores) - np.array(want)).max() <= 1e-5
        # all candidates were rescored: the best rerank score among all documents leads
        every = reference_cross_encoder_scores(cross_encoder_dir, [(QUERY, d) for d in DOCUMENTS])
        assert abs(scores[0] - max(every)) <= 1e-5
        unknown = http.post(search, json={"query": QUERY, "rerank": {"model": "nope"}})
        assert unknown.status_code == 404
        few = http.post(search, json={"query": QUERY, "top_k": 5, "rerank": {"candidates": 2}})
        assert few.status_code == 400 and "candidates" in few.json()["error"]["message"]


def test_kb_search_on_the_command_line_reranks(server: Served) -> None:
    import json
    import subprocess
    import sys

    from support.servers import wait_job_done

    with httpx.Client(base_url=server.base, headers=server.admin, timeout=60) as http:
        assert http.post("/v1/collections", json={"name": "cli"}).status_code == 201
        for i, text in enumerate(DOCUMENTS):
            up = http.post("/v1/collections/cli/documents", files={"file": (f"{i}.txt", text)})
            assert wait_job_done(http, up.json()["job"]["id"])["status"] == "succeeded"
    key = server.admin["Authorization"].removeprefix("Bearer ")
    command = ["kb", "search", "cli", QUERY, "--top-k", "2", "--rerank", "ms-marco-tiny"]
    done = subprocess.run(
        [sys.executable, "-m", "embedgate", *command, "--server", server.base],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EMBEDGATE_API_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(hits) == 2 and hits[0]["rerank_score"] >= hits[1]["rerank_score"]


def test_open_webui_reranks_through_embedgate(server: Served, cross_encoder_dir: Path) -> None:
    """Open WebUI's own external-reranker code (from its pinned wheel) against this server:
    it posts {model, query, documents, top_n} with our key and reads results[].index and
    relevance_score back into the documents' order."""
    from support.clients import open_webui_rerank

    key = server.admin["Authorization"].removeprefix("Bearer ")
    pairs = [(QUERY, d) for d in DOCUMENTS]
    scores = open_webui_rerank(server.base + "/v1/rerank", key, "ms-marco-tiny", pairs)
    assert scores is not None
    want = reference_cross_encoder_scores(cross_encoder_dir, pairs)
    assert np.abs(np.array(scores) - np.array(want)).max() <= 1e-5
    # a wrong key is an error Open WebUI sees (it then logs and ranks without a reranker)
    assert open_webui_rerank(server.base + "/v1/rerank", "wrong", "ms-marco-tiny", pairs) is None


def test_the_tei_rerank_shape(server: Served, cross_encoder_dir: Path) -> None:
    """text-embeddings-inference's /rerank: {query, texts, return_text} -> [{index, score,
    text?}] best first, from the first reranker."""
    reply = _post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert reply.status_code == 200, reply.text
    ranked = reply.json()
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    want = reference_cross_encoder_scores(cross_encoder_dir, [(QUERY, d) for d in DOCUMENTS])
    for r in ranked:
        assert abs(r["score"] - want[r["index"]]) <= 1e-5
        assert r["text"] == DOCUMENTS[r["index"]]
    raw = _post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "raw_scores"
    assert (
        httpx.post(server.base + "/rerank", json={"query": QUERY, "texts": ["x"]}).status_code
        == 401
    )
