"""Readiness follows the self-test; logs are one JSON line each and never carry input text."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine.backends.fake import FakeBackend
from embedgate.engine.pooling import FloatArray
from embedgate.logs import JsonFormatter
from support.servers import client_for, fake_factory


class BatchDependentBackend(FakeBackend):
    """A broken model: a row's vector depends on what else is in the batch."""

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        out = super().forward(sequences)
        return out + np.float32(len(sequences))


def test_failing_self_test_keeps_server_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(), fake_factory(BatchDependentBackend()))
    with caplog.at_level(logging.ERROR), TestClient(app) as client:
        deadline = time.monotonic() + 10
        while "self-test" not in client.get("/ready").json()["reason"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while client.get("/ready").json()["reason"] == "running the self-test":
            time.sleep(0.02)
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "padded batch" in ready.json()["reason"]
        assert client.get("/health").status_code == 200
        key = (app.state.embedgate.settings.data_dir / "admin.key").read_text().strip()
        response = client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert any("self-test failed" in r.getMessage() for r in caplog.records)


def test_passing_self_test_turns_ready() -> None:
    with client_for(create_app(Settings(), fake_factory())) as client:
        assert client.get("/ready").json() == {
            "status": "ready",
            "model": "fake-qwen3",
            "models": {"fake-qwen3": "ready"},
        }
        assert "embedgate_ready 1.0" in client.get("/metrics").text


def test_input_text_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = 'top secret\n{"level": "critical", "message": "forged"}'
    with (
        client_for(create_app(Settings(), fake_factory())) as client,
        caplog.at_level(logging.DEBUG),
    ):
        assert client.post("/v1/embeddings", json={"input": secret}).status_code == 200
        client.post("/v1/embeddings", json={"input": [secret], "dimensions": 7})
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any('"route": "/v1/embeddings"' in line for line in lines)
    for line in lines:
        assert "\n" not in line and "top secret" not in line and "forged" not in line
        json.loads(line)


def test_json_formatter_keeps_hostile_messages_on_one_line() -> None:
    record = logging.makeLogRecord({"msg": 'a\nb {"x": 1}', "levelname": "INFO", "levelno": 20})
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == 'a\nb {"x": 1}'
