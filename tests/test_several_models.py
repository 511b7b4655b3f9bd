"""Two embedding models and a reranker in one `embedgate serve`, over HTTP: requests routed
by `model`, keys limited to named models, each model's own metrics series, usage and audit
naming the model, and a collection moved from one embedding model to the other while both
serve (every search answered throughout, each from one model and one index generation)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.processes import Served, serving
from support.servers import wait_until

pytestmark = pytest.mark.slow  # a real server with three models

MINILM = "model"  # the MiniLM directory's name: the default (first) model
QWEN = "Qwen3-Embedding-tiny"
RERANKER = "ms-marco-tiny"
TOPICS = [
    "annual leave and holidays",
    "the VPN and remote access",
    "expense reports and receipts",
    "security badges at the front desk",
    "parental leave and benefits",
    "laptop replacement and IT support",
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_dir: Path,
    tiny_qwen3_dir: Path,
    cross_encoder_dir: Path,
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("several-models")
    models = [minilm_dir, tiny_qwen3_dir, cross_encoder_dir]
    args = [part for model in models for part in ("--model", str(model))]
    with serving(root / "data", *args) as served:
        assert wait_until(lambda: _all_ready(served), 120), _get(served, "/ready").text
        yield served


def _all_ready(served: Served) -> bool:
    reply = httpx.get(served.base + "/ready", timeout=5)
    return reply.status_code == 200 and set(reply.json()["models"].values()) == {"ready"}


def _get(served: Served, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(served.base + path, headers=headers or served.admin, timeout=30)


def _post(
    served: Served, path: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(served.base + path, json=body, headers=headers or served.admin, timeout=60)


def _embed(served: Served, model: str, texts: list[str], input_type: str) -> np.ndarray:
    reply = _post(
        served, "/v1/embeddings", {"model": model, "input": texts, "input_type": input_type}
    )
    assert reply.status_code == 200, reply.text
    return np.array([row["embedding"] for row in reply.json()["data"]], dtype=np.float64)


def _key(served: Served, **grants: object) -> dict[str, str]:
    reply = _post(served, "/v1/admin/keys", {"name": "limited", "role": "writer", **grants})
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['key']}"}


def _wait_for_documents(served: Served, collection: str) -> None:
    def settled() -> bool:
        docs = _get(served, f"/v1/collections/{collection}/documents").json()["data"]
        return all(d["status"] in ("ready", "failed") for d in docs)

    assert wait_until(settled, 120)
    docs = _get(served, f"/v1/collections/{collection}/documents").json()["data"]
    assert all(d["status"] == "ready" for d in docs), docs


def _upload(served: Served, collection: str, name: str, text: str) -> None:
    reply = httpx.post(
        f"{served.base}/v1/collections/{collection}/documents",
        files={"file": (name, text.encode())},
        headers=served.admin,
        timeout=60,
    )
    assert reply.status_code == 202, reply.text


def test_models_lists_both_embedding_models_and_routes_by_model(server: Served) -> None:
    data = {m["id"]: m for m in _get(server, "/v1/models").json()["data"]}
    assert {k: m["task"] for k, m in data.items()} == {
        MINILM: "embed",
        QWEN: "embed",
        RERANKER: "rerank",
    }
    assert data[MINILM]["default"] is True and data[QWEN]["default"] is False
    for name in (MINILM, QWEN):
        vectors = _embed(server, name, ["hello world"], "document")
        assert vectors.shape == (1, data[name]["dimensions"])
        assert abs(np.linalg.norm(vectors[0]) - 1) < 1e-4
    assert data[MINILM]["dimensions"] != data[QWEN]["dimensions"]  # really two models
    unnamed = _post(server, "/v1/embeddings", {"input": "hello world"}).json()
    assert unnamed["model"] == MINILM
    reranker = _post(server, "/v1/embeddings", {"model": RERANKER, "input": "x"})
    assert reranker.status_code == 400 and "reranker" in reranker.json()["error"]["message"]
    unknown = _post(server, "/v1/embeddings", {"model": "nope", "input": "x"})
    assert unknown.status_code == 404
    assert QWEN in unknown.json()["error"]["message"]  # names what is served
    rerank_qwen = _post(server, "/v1/rerank", {"model": QWEN, "query": "q", "documents": ["d"]})
    assert rerank_qwen.status_code == 400


def test_a_key_limited_to_one_model_may_use_only_that_model(server: Served) -> None:
    limited = _key(server, models=[QWEN])
    me = _get(server, "/v1/me", limited).json()
    assert me["models"] == [QWEN]
    assert _post(server, "/v1/embeddings", {"model": QWEN, "input": "x"}, limited).is_success
    for body in ({"input": "x"}, {"model": MINILM, "input": "x"}):
        refused = _post(server, "/v1/embeddings", body, limited)
        assert refused.status_code == 403, refused.text
        assert MINILM in refused.json()["error"]["message"]
    reranked = _post(server, "/v1/rerank", {"query": "q", "documents": ["d"]}, limited)
    assert reranked.status_code == 403
    # a collection embedded with a model the key may not use cannot be searched with it
    assert _post(server, "/v1/collections", {"name": "minilm-only"}).status_code == 201
    search = _post(server, "/v1/collections/minilm-only/search", {"query": "x"}, limited)
    assert search.status_code == 403
    lexical = _post(
        server, "/v1/collections/minilm-only/search", {"query": "x", "mode": "lexical"}, limited
    )
    assert lexical.status_code == 200  # no model involved
    created = _post(server, "/v1/collections", {"name": "qwen-owned", "model": QWEN}, limited)
    assert created.status_code == 201 and created.json()["model"] == QWEN
    keys = _get(server, "/v1/admin/keys").json()["data"]
    assert [QWEN] in [k["models"] for k in keys]


def test_each_model_has_its_own_metrics_and_usage_names_the_model(server: Served) -> None:
    user = _key(server)
    for model in (MINILM, QWEN, QWEN):
        assert _post(server, "/v1/embeddings", {"model": model, "input": "metered"}, user)
    assert _post(server, "/v1/rerank", {"query": "q", "documents": ["a", "b"]}, user)
    metrics = _get(server, "/metrics").text
    for name in (MINILM, QWEN, RERANKER):
        assert f'embedgate_queue_max_tokens{{model="{name}"}}' in metrics
        assert f'embedgate_model_restarts_total{{model="{name}"}} 0.0' in metrics
    assert f'embedgate_model_ready{{model="{QWEN}",task="embed"}} 1.0' in metrics
    assert f'embedgate_model_ready{{model="{RERANKER}",task="rerank"}} 1.0' in metrics
    passes = {
        name: _sample(metrics, f'embedgate_batch_size_count{{model="{name}"}}')
        for name in (MINILM, QWEN, RERANKER)
    }
    assert all(count >= 1 for count in passes.values()), passes
    key_id = _get(server, "/v1/me", user).json()["subject"]
    audit = _get(server, f"/v1/admin/audit?key_id={key_id}").json()["data"]
    assert sorted(r["model"] for r in audit if r.get("route") == "/v1/embeddings") == sorted(
        [MINILM, QWEN, QWEN]
    )
    assert [r["model"] for r in audit if r.get("route") == "/v1/rerank"] == [RERANKER]
    usage = {row["key_id"]: row for row in _get(server, "/v1/admin/usage").json()["data"]}
    per_model = usage[key_id]["models"]
    assert per_model[QWEN]["requests"] == 2 and per_model[MINILM]["requests"] == 1
    assert per_model[RERANKER]["requests"] == 1


def _sample(metrics: str, series: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(series + " "))
    return float(line.split()[-1])


def test_a_collection_moves_to_another_model_while_both_serve(server: Served) -> None:
    """Searches run throughout the reindex; each answer names its model and generation, and
    every hit's dense score is that model's cosine of the query and the chunk: one model,
    one generation, never a mix. A document uploaded during the move lands in the new
    model's index, embedded with it."""
    assert _post(
        server, "/v1/collections", {"name": "moving", "chunk_tokens": 64, "chunk_overlap": 8}
    ).is_success
    for i, topic in enumerate(TOPICS):
        text = " ".join(f"Policy {i}.{n} covers {topic} for every employee." for n in range(12))
        _upload(server, "moving", f"policy-{i}.txt", text)
    _wait_for_documents(server, "moving")
    query = "how many days of leave do employees get"
    references: dict[tuple[str, str], float] = {}

    def check(answer: dict[str, object]) -> tuple[str, int]:
        model, generation = str(answer["model"]), int(str(answer["generation"]))
        hits = answer["data"]
        assert isinstance(hits, list) and hits
        missing = [h["text"] for h in hits if (model, h["text"]) not in references]
        if missing:
            q = _embed(server, model, [query], "query")[0]
            vectors = _embed(server, model, missing, "document")
            for text, vector in zip(missing, vectors, strict=True):
                references[(model, text)] = float(q @ vector)
        for hit in hits:
            assert abs(hit["dense_score"] - references[(model, hit["text"])]) < 2e-3, (model, hit)
        return model, generation

    body = {"query": query, "mode": "dense", "top_k": 100}
    first = _post(server, "/v1/collections/moving/search", body)
    assert first.status_code == 200, first.text
    assert check(first.json()) == (MINILM, 1)

    answers: list[dict[str, object]] = []
    failures: list[str] = []
    done = threading.Event()

    def search_throughout() -> None:
        while not done.is_set():
            reply = _post(server, "/v1/collections/moving/search", body)
            if reply.status_code != 200:
                failures.append(reply.text)
            else:
                answers.append(reply.json())

    searcher = threading.Thread(target=search_throughout)
    searcher.start()
    try:
        time.sleep(0.5)
        started = _post(server, "/v1/collections/moving/reindex", {"model": QWEN})
        assert started.status_code == 202, started.text
        _upload(server, "moving", "late.txt", "A late memo about the cafeteria menu. " * 20)

        def finished() -> bool:
            job = _get(server, f"/v1/jobs/{started.json()['id']}").json()
            return bool(job["status"] != "running")

        assert wait_until(finished, 180)
        job = _get(server, f"/v1/jobs/{started.json()['id']}").json()
        assert job["status"] == "succeeded", job
        time.sleep(1.5)
    finally:
        done.set()
        searcher.join(60)
    assert not failures, failures[:3]
    seen = [check(answer) for answer in answers]
    assert (MINILM, 1) in seen and (QWEN, 2) in seen, sorted(set(seen))
    assert set(seen) == {(MINILM, 1), (QWEN, 2)}
    switched = seen.index((QWEN, 2))
    assert all(s == (QWEN, 2) for s in seen[switched:])  # the switch is one-way and atomic
    described = _get(server, "/v1/collections/moving").json()
    assert described["model"] == QWEN
    _wait_for_documents(server, "moving")
    after = _post(server, "/v1/collections/moving/search", body).json()
    assert check(after) == (QWEN, 2)
    assert "late.txt" in {hit["filename"] for hit in after["data"]}  # in the new index
    audit = _get(server, "/v1/admin/audit?limit=500").json()["data"]
    moves = [r for r in audit if r.get("action") == "collection.reindex"]
    assert moves and moves[0]["before"]["model"] == MINILM and moves[0]["after"]["model"] == QWEN


def test_the_console_shows_the_reranked_column_and_model_grants(server: Served) -> None:
    """In a real browser: the search playground's fourth column (hybrid, reranked by the
    served reranker) ordered by the reranker's score, each column naming the model that
    answered; the keys page limits a new key to a model and lists the grant."""
    from support.browser import Incidents, chromium, new_page

    assert _post(server, "/v1/collections", {"name": "console-kb"}).is_success
    for i, topic in enumerate(TOPICS):
        _upload(server, "console-kb", f"doc-{i}.txt", f"This page explains {topic}. " * 5)
    _wait_for_documents(server, "console-kb")
    incidents = Incidents()
    with chromium() as browser:
        page = new_page(browser, server.base, incidents)
        page.goto("/ui/")
        page.fill("#api-key", server.admin["Authorization"].removeprefix("Bearer "))
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("#nav a")
        page.goto("/ui/#/search")
        page.wait_for_selector("#search-collection option[value='console-kb']", state="attached")
        page.wait_for_selector(f"#search-reranker option[value='{RERANKER}']", state="attached")
        page.select_option("#search-collection", "console-kb")
        page.select_option("#search-reranker", RERANKER)
        page.fill("#search-query", "how do I connect to the VPN")
        page.click("#search-run")
        page.wait_for_function(
            "() => document.querySelectorAll('.column').length === 4 && "
            "[...document.querySelectorAll('.column')].every(c => c.querySelector('.hit, .error'))"
        )
        reranked = page.locator(".column[data-mode=reranked]")
        assert reranked.locator(".error").count() == 0, reranked.inner_text()
        scores = [float(s) for s in reranked.locator(".hit .rerank-score").all_inner_texts()]
        assert len(scores) >= 2 and scores == sorted(scores, reverse=True)
        assert f"{MINILM} + {RERANKER}" in reranked.locator(".source").inner_text()
        assert page.locator(".column[data-mode=dense] .hit .rerank-score").count() == 0
        assert page.locator(".column[data-mode=dense] .source").get_attribute("data-model") == (
            MINILM
        )

        page.goto("/ui/#/keys")
        page.fill("#key-name", "qwen only")
        page.select_option("#key-role", "writer")
        page.fill("#key-models", QWEN)
        page.click("#key-create")
        page.wait_for_selector("#new-key")
        row = page.locator("#key-list tr", has_text="qwen only")
        row.wait_for()
        assert QWEN in row.inner_text()
    assert not incidents.errors, incidents.errors
