"""Gateway mode for a reranker through real processes: an `embedgate serve` engine scoring
with a cross-encoder, and a gateway whose reranker runs on it, once over the Cohere / vLLM
`/v1/rerank` API and once over TEI's `/rerank`. The gateway's own keys, limits and audit
apply; the scores are the engine's; a stopped engine is a 503 with Retry-After."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.processes import Served, serving, stop
from support.rerankers import QUERY
from support.servers import wait_until

pytestmark = pytest.mark.slow

DOCUMENTS = [
    "Employees get fifteen days of annual leave per year.",
    "The VPN must be used for every connection to the internal network.",
    "Sick leave is ten days.",
]
RERANKER = "ms-marco-tiny"


@pytest.fixture(scope="module")
def cluster(
    minilm_dir: Path, cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, Served]]:
    root = tmp_path_factory.mktemp("gateway-rerank")
    engine_env = {"EMBEDGATE_AUTH": "false"}
    with serving(root / "engine", "--model", str(minilm_dir), "--model", str(cross_encoder_dir),
                 **engine_env) as engine:  # fmt: skip
        models = [
            {"path": str(cross_encoder_dir), "name": name, "upstreams": [engine.base],
             "upstream_api": api, "upstream_model": RERANKER}
            for name, api in (("upstream-cohere", "cohere"), ("upstream-tei", "tei"))
        ]  # fmt: skip
        with serving(
            root / "gateway", "--model", str(minilm_dir), EMBEDGATE_MODELS=json.dumps(models)
        ) as gateway:
            assert wait_until(lambda: _all_ready(gateway), 60), _ready(gateway).text
            yield engine, gateway


def _ready(served: Served) -> httpx.Response:
    return httpx.get(served.base + "/ready", timeout=5)


def _all_ready(served: Served) -> bool:
    reply = _ready(served)
    return reply.status_code == 200 and set(reply.json()["models"].values()) == {"ready"}


def _rerank(served: Served, model: str | None, **extra: object) -> httpx.Response:
    body = {"query": QUERY, "documents": DOCUMENTS, **extra}
    if model is not None:
        body["model"] = model
    headers = served.admin if (served.data_dir / "admin.key").exists() else {}
    return httpx.post(served.base + "/v1/rerank", json=body, headers=headers, timeout=60)


def _scores(reply: httpx.Response) -> dict[int, float]:
    assert reply.status_code == 200, reply.text
    return {r["index"]: r["relevance_score"] for r in reply.json()["results"]}


def test_the_gateway_reranks_with_the_engines_scores_over_both_apis(
    cluster: tuple[Served, Served],
) -> None:
    engine, gateway = cluster
    direct = _scores(_rerank(engine, RERANKER))
    for name in ("upstream-cohere", "upstream-tei"):
        through = _scores(_rerank(gateway, name))
        assert through.keys() == direct.keys()
        for index, score in direct.items():
            assert abs(through[index] - score) < 1e-5, (name, index, through, direct)
    models = {m["id"]: m for m in httpx.get(
        gateway.base + "/v1/models", headers=gateway.admin, timeout=10
    ).json()["data"]}  # fmt: skip
    assert models["upstream-tei"]["task"] == "rerank"
    metrics = httpx.get(gateway.base + "/metrics", headers=gateway.admin, timeout=10).text
    for name in ("upstream-cohere", "upstream-tei"):
        series = f'embedgate_upstream_requests_total{{model="{name}",upstream="{engine.base}"}}'
        assert series in metrics


def test_the_gateways_keys_limits_and_audit_apply(cluster: tuple[Served, Served]) -> None:
    _, gateway = cluster
    anonymous = httpx.post(
        gateway.base + "/v1/rerank", json={"query": "q", "documents": ["d"]}, timeout=10
    )
    assert anonymous.status_code == 401
    refused = _rerank(gateway, "upstream-cohere", instruction="judge relevance")
    assert refused.status_code == 400 and "instruction" in refused.text
    for model in ("upstream-cohere", "upstream-tei"):  # this test's own calls: xdist may run
        assert _rerank(gateway, model).status_code == 200  # it apart from the others

    def audited_models() -> set[str]:
        audit = httpx.get(
            gateway.base + "/v1/admin/audit?route=/v1/rerank", headers=gateway.admin, timeout=10
        ).json()["data"]
        return {r["model"] for r in audit}

    assert wait_until(lambda: {"upstream-cohere", "upstream-tei"} <= audited_models(), 15)


def test_a_stopped_engine_is_a_503_with_retry_after(cluster: tuple[Served, Served]) -> None:
    """Last in the module: it stops the engine."""
    engine, gateway = cluster
    stop(engine)
    reply = _rerank(gateway, "upstream-tei")
    assert reply.status_code == 503, reply.text
    assert reply.headers.get("retry-after")
    assert wait_until(lambda: _ready(gateway).json()["models"]["upstream-tei"] != "ready", 30)
    embeddings = httpx.post(
        gateway.base + "/v1/embeddings", json={"input": "still here"}, headers=gateway.admin
    )
    assert embeddings.status_code == 200  # the local embedding model is not affected
