"""The gateway's health follows its upstreams while it is idle: an active check probes every
upstream every `upstream_health_interval_s`, so `/ready` turns 503 soon after the only engine
dies with no traffic, a request then gets its 503 at once, and the engine's return is noticed
without a client's help. Real processes: an engine and a gateway, both `embedgate serve`."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from embedgate.engine.config import base_url
from support.processes import serving, start_serve, stop, wait_served
from support.servers import wait_until
from support.services import free_port

ENGINE_ENV = {"EMBEDGATE_AUTH": "false", "EMBEDGATE_MODEL_PROCESS": "false"}


@pytest.mark.parametrize(
    "written",
    ["http://h:8001", "http://h:8001/", "http://h:8001/v1", "http://h:8001/v1/", " http://h:8001 "],
)
def test_an_upstream_url_is_taken_with_or_without_v1(written: str) -> None:
    assert base_url(written) == "http://h:8001"


def test_an_upstream_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        base_url("h:8001")


def seconds_until(predicate: object, limit: float) -> float:
    """How long `predicate` took to hold (polled every 0.2 s); fails past `limit`."""
    started = time.monotonic()
    assert wait_until(predicate, seconds=limit), f"not within {limit} s"  # type: ignore[arg-type]
    return time.monotonic() - started


@pytest.mark.slow
def test_an_idle_gateway_notices_its_upstream_die_and_come_back(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    model = str(tiny_qwen3_dir)
    port = free_port()
    engine = start_serve(tmp_path / "engine", "--model", model, port=port, **ENGINE_ENV)
    try:
        wait_served(engine)
        # The OpenAI-style base URL, with a trailing slash: the same server as its root.
        upstream = f"http://127.0.0.1:{port}/v1/"
        with serving(tmp_path / "gw", "--model", model, "--upstream", upstream) as gateway:
            key = (gateway.data_dir / "admin.key").read_text().strip()
            auth = {"Authorization": f"Bearer {key}"}

            def embed() -> httpx.Response:
                return httpx.post(
                    gateway.base + "/v1/embeddings", json={"input": ["vpn"]}, headers=auth
                )

            def ready() -> int:
                return httpx.get(gateway.base + "/ready", timeout=5).status_code

            assert embed().status_code == 200 and ready() == 200

            stop(engine, signal.SIGKILL)  # no traffic from here on
            went_down = seconds_until(lambda: ready() == 503, limit=10)

            started = time.monotonic()
            refused = embed()
            took = time.monotonic() - started
            assert refused.status_code == 503 and "retry-after" in refused.headers
            assert took < 1.0, f"a request with every upstream down took {took:.2f} s"
            message = refused.json()["error"]["message"]
            assert message.lower().count("retry shortly") == 1, message

            engine = start_serve(tmp_path / "engine", "--model", model, port=port, **ENGINE_ENV)
            came_back = seconds_until(lambda: ready() == 200, limit=10 + 60)  # start included
            assert embed().status_code == 200
            print(
                f"/ready 503 {went_down:.1f} s after the kill; 503 in {took * 1000:.0f} ms; "
                f"200 again {came_back:.1f} s after the restart began"
            )
    finally:
        stop(engine)


@pytest.mark.slow
def test_the_engine_returns_within_ten_seconds_of_serving_again(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """The restart's own start-up is not the gateway's to count: once the engine answers
    again, the gateway's /ready is 200 within 10 s."""
    model = str(tiny_qwen3_dir)
    port = free_port()
    engine = start_serve(tmp_path / "engine", "--model", model, port=port, **ENGINE_ENV)
    try:
        wait_served(engine)
        with serving(
            tmp_path / "gw", "--model", model, "--upstream", f"http://127.0.0.1:{port}"
        ) as gateway:

            def ready() -> int:
                return httpx.get(gateway.base + "/ready", timeout=5).status_code

            stop(engine, signal.SIGKILL)
            seconds_until(lambda: ready() == 503, limit=10)
            time.sleep(12)  # ejected long enough for the backoff to grow
            engine = start_serve(tmp_path / "engine", "--model", model, port=port, **ENGINE_ENV)
            wait_served(engine)
            back = seconds_until(lambda: ready() == 200, limit=10)
            print(f"/ready 200 {back:.1f} s after the engine served again")
    finally:
        stop(engine)
