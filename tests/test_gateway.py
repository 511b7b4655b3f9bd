"""Gateway mode through real processes: two `embedgate serve` engines as upstreams and a
gateway in front of them, reached with the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from support.processes import Served, serving

pytestmark = pytest.mark.slow

QUERIES = ["how many days of annual leave", "VPN 连不上怎么办", "reset my password"]
DOCUMENTS = ["Employees get fifteen days of annual leave.", "内网须通过VPN连接。"]
INSTRUCTION = "Given a question, retrieve the policy passage that answers it"


@pytest.fixture(scope="module")
def cluster(
    tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, Served, Served]]:
    root = tmp_path_factory.mktemp("gateway")
    model = str(tiny_qwen3_dir)
    engine_env = {"EMBEDGATE_AUTH": "false", "EMBEDGATE_MODEL_PROCESS": "false"}
    with (
        serving(root / "a", "--model", model, **engine_env) as a,
        serving(root / "b", "--model", model, **engine_env) as b,
        serving(
            root / "gw",
            "--model",
            model,
            "--upstream",
            a.base,
            "--upstream",
            b.base,
            EMBEDGATE_UPSTREAM_MAX_BATCH="2",
        ) as gateway,
    ):
        yield a, b, gateway


def client(served: Served, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=served.base + "/v1", api_key=key, max_retries=0)


def vectors(api: OpenAI, texts: list[str], **extra: object) -> np.ndarray:
    response = api.embeddings.create(model="Qwen3-Embedding-tiny", input=texts, **extra)  # type: ignore[arg-type]
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_the_gateway_returns_the_engines_vectors(cluster: tuple[Served, Served, Served]) -> None:
    a, _, gateway = cluster
    key = (gateway.data_dir / "admin.key").read_text().strip()
    through, direct = client(gateway, key), client(a)
    query = {"extra_body": {"input_type": "query", "instruction": INSTRUCTION}}
    for texts, extra in [(QUERIES, query), (DOCUMENTS, {"extra_body": {"input_type": "document"}})]:
        assert np.array_equal(vectors(through, texts, **extra), vectors(direct, texts, **extra))
    for dims in (32, 64):
        got = vectors(through, QUERIES, dimensions=dims, **query)
        want = vectors(direct, QUERIES, dimensions=dims, **query)
        assert got.shape == (3, dims)
        assert np.allclose(got, want, atol=1e-6)  # sliced here from unit vectors: ulps apart
    usage = through.embeddings.create(model="Qwen3-Embedding-tiny", input=DOCUMENTS).usage
    assert usage.prompt_tokens > len(DOCUMENTS)  # counted with the model's own tokenizer


def test_the_gateway_still_enforces_keys(cluster: tuple[Served, Served, Served]) -> None:
    _, _, gateway = cluster
    denied = httpx.post(
        gateway.base + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer no"}
    )
    assert denied.status_code == 401
    assert httpx.get(gateway.base + "/ready").status_code == 200
