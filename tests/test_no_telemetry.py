"""FastAPI's built-in OpenTelemetry stays off, whatever providers the host process configures.

A provider configured by something else in the process (an auto-instrumentation wrapper, an
environment-driven SDK) would otherwise receive spans, metrics and exception logs for every
request, messages that can quote the caller's input. The control test shows the recorders below
do see a plain FastAPI app, so the check on ours can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import client_for, fake_factory

pytest.importorskip("fastapi.telemetry", reason="this FastAPI has no telemetry to switch off")
trace = pytest.importorskip("opentelemetry.trace")
metrics = pytest.importorskip("opentelemetry.metrics")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []


def install_recording_providers(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Global tracer and meter providers that note every time instrumentation asks for them."""
    recorder = Recorder()

    # real providers as far as FastAPI can tell (it ignores the API's no-op and proxy ones)
    class RecordingTracerProvider(trace.TracerProvider):  # type: ignore[misc]
        def get_tracer(self, name: str, *args: Any, **kwargs: Any) -> Any:
            recorder.calls.append(f"tracer:{name}")
            return trace.NoOpTracer()

    class RecordingMeterProvider(metrics.MeterProvider):  # type: ignore[misc]
        def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
            recorder.calls.append(f"meter:{name}")
            return metrics.NoOpMeter(name)

    tracer_provider, meter_provider = RecordingTracerProvider(), RecordingMeterProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: tracer_provider)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: meter_provider)
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    return recorder


def test_control_a_plain_fastapi_app_reports_to_configured_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = install_recording_providers(monkeypatch)
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
    assert recorder.calls, "the recorders no longer see FastAPI's instrumentation"


def test_embedgate_reports_nothing_to_configured_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = install_recording_providers(monkeypatch)
    with client_for(create_app(Settings(), fake_factory())) as client:
        assert client.post("/v1/embeddings", json={"input": "private text"}).status_code == 200
        assert client.post("/v1/embeddings", json={"input": 7}).status_code == 400
        assert client.get("/v1/models").status_code == 200
        assert client.get("/no/such/route").status_code == 404
    assert recorder.calls == []
