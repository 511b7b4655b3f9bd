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


def _maps_libtorch(served: Served) -> bool:
    maps = Path(f"/proc/{served.process.pid}/maps").read_text()
    return "libtorch" in maps


def test_the_gateway_process_never_loads_torch(cluster: tuple[Served, Served, Served]) -> None:
    """A gateway tokenises with the model's tokenizer.json and runs no model: PyTorch's
    libraries are never mapped into it (hundreds of MB and seconds of start-up saved), while
    an engine that runs the model in its own process does map them."""
    a, _, gateway = cluster
    assert httpx.get(gateway.base + "/ready").status_code == 200  # serving, model known
    assert vectors(client(a), QUERIES).shape[0] == 3
    assert _maps_libtorch(a)  # the check can see torch where it is loaded
    assert not _maps_libtorch(gateway)


def test_the_gateway_still_enforces_keys(cluster: tuple[Served, Served, Served]) -> None:
    _, _, gateway = cluster
    denied = httpx.post(
        gateway.base + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer no"}
    )
    assert denied.status_code == 401
    assert httpx.get(gateway.base + "/ready").status_code == 200


def test_kill_9_of_an_upstream_under_load_fails_no_request(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """64 clients; one upstream is killed with SIGKILL mid-load: every request still
    succeeds (its batches are retried on the other), /metrics shows the ejection, and the
    upstream is admitted again once it is restarted on its port."""
    import signal
    import threading
    import time

    from support.processes import start_serve, stop, wait_served
    from support.servers import wait_until

    model = str(tiny_qwen3_dir)
    env = {"EMBEDGATE_AUTH": "false", "EMBEDGATE_MODEL_PROCESS": "false"}
    with serving(tmp_path / "b", "--model", model, **env) as b:
        a = start_serve(tmp_path / "a", "--model", model, **env)
        wait_served(a)
        port = int(a.base.rsplit(":", 1)[1])
        try:
            with serving(
                tmp_path / "gw",
                "--model",
                model,
                "--upstream",
                a.base,
                "--upstream",
                b.base,
                EMBEDGATE_UPSTREAM_MAX_BATCH="4",
                EMBEDGATE_MAX_QUEUE_SECONDS="120",
            ) as gateway:
                headers = gateway.admin
                failures: list[str] = []
                done = 0
                stop_at = time.monotonic() + 8
                lock = threading.Lock()

                def load(i: int) -> None:
                    nonlocal done
                    with httpx.Client(timeout=60) as http:
                        while time.monotonic() < stop_at:
                            r = http.post(
                                gateway.base + "/v1/embeddings",
                                headers=headers,
                                json={"input": [f"client {i} text {done}", "annual leave"]},
                            )
                            with lock:
                                done += 1
                                if r.status_code != 200:
                                    failures.append(f"{r.status_code} {r.text[:200]}")

                clients = [threading.Thread(target=load, args=(i,)) for i in range(64)]
                for thread in clients:
                    thread.start()
                time.sleep(2)
                a.process.send_signal(signal.SIGKILL)
                a.process.wait()
                for thread in clients:
                    thread.join()
                assert done > 64 and failures == []
                metrics = httpx.get(gateway.base + "/metrics", headers=headers).text
                labels = f'model="Qwen3-Embedding-tiny",upstream="{a.base}"'
                ejected = f"embedgate_upstream_ejections_total{{{labels}}}"
                assert ejected in metrics
                assert float(metrics.split(ejected)[1].split()[0]) >= 1
                healthy = f"embedgate_upstream_healthy{{{labels}}}"
                assert f"{healthy} 0.0" in metrics
                a = start_serve(tmp_path / "a", "--model", model, port=port, **env)
                wait_served(a)
                assert wait_until(
                    lambda: (
                        f"{healthy} 1.0"
                        in httpx.get(gateway.base + "/metrics", headers=headers).text
                    ),
                    30,
                )
        finally:
            stop(a)


def test_the_knowledge_base_works_through_the_gateway(
    cluster: tuple[Served, Served, Served],
) -> None:
    from support.servers import wait_job_done

    _, _, gateway = cluster
    headers = gateway.admin
    http = httpx.Client(base_url=gateway.base, headers=headers, timeout=60)
    assert http.post("/v1/collections", json={"name": "handbook"}).status_code == 201
    accepted = http.post(
        "/v1/collections/handbook/documents",
        files={"file": ("leave.md", b"# Leave\n\nAnnual leave is fifteen days.\n")},
    ).json()
    job = wait_job_done(http, accepted["job"]["id"])
    assert job["status"] == "succeeded", job
    hits = http.post("/v1/collections/handbook/search", json={"query": "annual leave"}).json()
    assert hits["data"][0]["filename"] == "leave.md"
    models = http.get("/v1/models").json()["data"][0]
    assert len(models["fingerprint"]) == 16
