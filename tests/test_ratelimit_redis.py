"""Rate limits on a real Redis: shared across processes (case 22), charged by tokens (23),
and the documented behaviour when Redis dies mid-run (case 25), both ways."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import admin_key, client_for, fake_factory, wait_ready
from support.services import RedisServer, free_port, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def make_key(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "embedgate", "keys", "create", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_server_processes_share_one_limit_through_redis(
    tmp_path: Path, redis: RedisServer
) -> None:
    key = make_key(tmp_path, "--name", "shared", "--role", "reader", "--rpm", "5")
    env = {
        **os.environ,
        "EMBEDGATE_REDIS_URL": redis.url,
        "EMBEDGATE_DATA_DIR": str(tmp_path),
        "EMBEDGATE_LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "embedgate", "serve", "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for port in ports:
            wait_ready(
                lambda path, port=port: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5),
                timeout=180,
            )
        codes = [
            httpx.get(
                f"http://127.0.0.1:{ports[i % 2]}/v1/models", headers={"x-api-key": key}, timeout=10
            ).status_code
            for i in range(6)
        ]
        assert sorted(codes) == [200] * 5 + [429]
        assert codes[-1] == 429
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def test_tokens_per_minute_on_redis(tmp_path: Path, redis: RedisServer) -> None:
    app = create_app(Settings(data_dir=tmp_path, redis_url=redis.url), fake_factory())
    with client_for(app, authenticated=False) as c:
        admin = {"Authorization": f"Bearer {admin_key(app)}"}
        key = c.post(
            "/v1/admin/keys", json={"name": "t", "role": "writer", "tpm": 8}, headers=admin
        ).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        assert c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers).status_code == 200
        refused = c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"


def test_redis_down_fails_closed_with_503(tmp_path: Path, redis: RedisServer) -> None:
    app = create_app(
        Settings(data_dir=tmp_path, redis_url=redis.url, default_rpm=1000), fake_factory()
    )
    with client_for(app) as c:
        assert c.post("/v1/embeddings", json={"input": "before"}).status_code == 200
        redis.stop()
        started = time.monotonic()
        response = c.post("/v1/embeddings", json={"input": "after"})
        assert time.monotonic() - started < 5  # no hang
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "rate_limiter_unavailable"
        assert c.get("/health").status_code == 200
        # authentication comes first: a wrong key is a 401 whatever Redis is doing
        wrong = c.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer egk_nope"}
        )
        assert wrong.status_code == 401, wrong.text


def test_redis_down_falls_back_to_local_limits_when_configured(
    tmp_path: Path, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        data_dir=tmp_path, redis_url=redis.url, redis_failure_mode="local", default_rpm=3
    )
    app = create_app(settings, fake_factory())
    with client_for(app) as c, caplog.at_level(logging.ERROR):
        assert c.post("/v1/embeddings", json={"input": "before"}).status_code == 200
        redis.stop()
        started = time.monotonic()
        codes = [c.post("/v1/embeddings", json={"input": "after"}).status_code for _ in range(4)]
        assert time.monotonic() - started < 10
        assert codes == [200, 200, 200, 429]  # per-process limits still hold
    assert any("per-process" in r.getMessage() for r in caplog.records)


def test_redis_password_never_reaches_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:hunter2-redis-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(Settings(data_dir=tmp_path, redis_url=url, default_rpm=10), fake_factory())
    with caplog.at_level(logging.DEBUG), client_for(app) as c:
        body = c.post("/v1/embeddings", json={"input": "x"}).text
        metrics = c.get("/metrics").text
    assert "hunter2" not in body + metrics + caplog.text


def evalsha_calls(redis: RedisServer) -> int:
    import redis as redis_sync

    stats = redis_sync.Redis.from_url(redis.url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_store_round_trip_per_embedding_request(tmp_path: Path, redis: RedisServer) -> None:
    """Requests/min and tokens/min are charged together; a key already refused is refused in
    process, without asking Redis again."""
    app = create_app(Settings(data_dir=tmp_path, redis_url=redis.url), fake_factory())
    with client_for(app, authenticated=False) as c:
        admin = {"Authorization": f"Bearer {admin_key(app)}"}
        key = c.post(
            "/v1/admin/keys",
            json={"name": "rt", "role": "writer", "rpm": 3, "tpm": 1000},
            headers=admin,
        ).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        before = evalsha_calls(redis)
        ok = [c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers) for _ in range(3)]
        assert [r.status_code for r in ok] == [200, 200, 200]
        assert evalsha_calls(redis) - before == 3
        assert ok[2].headers["x-ratelimit-remaining-requests"] == "0"
        assert ok[2].headers["x-ratelimit-remaining-tokens"] == str(1000 - 3 * 4)
        refused = c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "requests"
        assert evalsha_calls(redis) - before == 4
        again = c.post("/v1/embeddings", json={"input": "a b c"}, headers=headers)
        assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1
        assert evalsha_calls(redis) - before == 4  # answered from the remembered refusal
