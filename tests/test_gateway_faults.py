"""Upstream faults as the gateway's clients see them: an input an upstream refuses is that
request's 400 (the rest of its batch is served), and no upstream left is 503 with a
Retry-After, never a 500."""

from __future__ import annotations

import threading
from pathlib import Path

from embedgate.app import create_app
from embedgate.config import Settings
from support.fake_upstream import Behaviour, fake_upstream, gateway_factory
from support.servers import client_for


def test_refused_inputs_and_missing_upstreams(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    behaviour = Behaviour(dimensions=64)
    with fake_upstream(behaviour) as url:
        app = create_app(Settings(data_dir=tmp_path), gateway_factory(tiny_qwen3_dir, url))
        with client_for(app) as client:
            behaviour.mode = "refuse-poison"
            results: dict[str, int] = {}

            def call(name: str, texts: list[str]) -> None:
                results[name] = client.post("/v1/embeddings", json={"input": texts}).status_code

            threads = [
                threading.Thread(target=call, args=(f"good{i}", ["annual leave", "vpn"]))
                for i in range(4)
            ] + [threading.Thread(target=call, args=("bad", ["poison pill text"]))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results.pop("bad") == 400 and set(results.values()) == {200}
            refused = client.post("/v1/embeddings", json={"input": ["poison"]}).json()
            assert "input too long" in refused["error"]["message"]

            behaviour.mode = "500"  # every upstream fails: 503 with Retry-After, not 500
            down = client.post("/v1/embeddings", json={"input": ["annual leave again"]})
            assert down.status_code == 503 and "retry-after" in down.headers
            assert client.get("/ready").status_code == 503


def test_a_slow_upstream_is_given_up_at_the_request_deadline(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """An upstream that hangs does not hold a request past the gateway's deadline: the client
    gets 503 with Retry-After in about the deadline, not the upstream's 30 s call timeout."""
    import time

    from embedgate.engine import EmbeddingEngine, EngineLimits
    from embedgate.engine.backend import TextOptions
    from embedgate.engine.backends.gateway.backend import GatewayBackend
    from embedgate.engine.config import UpstreamConfig

    behaviour = Behaviour(dimensions=64)
    with fake_upstream(behaviour) as url:

        def factory(config: object, observer: object) -> EmbeddingEngine:
            backend = GatewayBackend.load(
                tiny_qwen3_dir,
                TextOptions(pad_to_multiple_of=1),
                [UpstreamConfig(url, "m", timeout_s=30.0)],
                deadline_s=1.0,
            )
            return EmbeddingEngine(backend, "fake-qwen3", (), EngineLimits(), observer)  # type: ignore[arg-type]

        app = create_app(Settings(data_dir=tmp_path), factory)
        with client_for(app) as client:
            behaviour.mode, behaviour.delay_s = "slow", 8.0
            started = time.monotonic()
            answer = client.post("/v1/embeddings", json={"input": ["held up"]})
            took = time.monotonic() - started
            assert answer.status_code == 503 and "retry-after" in answer.headers
            assert "deadline" in answer.json()["error"]["message"]
            assert took < 5.0


def test_a_model_directory_without_a_tokenizer_is_refused_clearly(tmp_path: Path) -> None:
    import pytest

    from embedgate.engine.backend import TextOptions
    from embedgate.engine.backends.gateway.backend import GatewayBackend
    from embedgate.engine.config import UpstreamConfig

    with pytest.raises(ValueError, match="gateway mode needs the served model's tokenizer"):
        GatewayBackend.load(tmp_path, TextOptions(), [UpstreamConfig("http://127.0.0.1:9", "m")])
