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
