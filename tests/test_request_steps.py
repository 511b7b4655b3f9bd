"""Each step of the HTTP pipeline alone, on a bare ASGI app, and the security rules without any
web framework: the seams the console and a second surface will reuse."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from embedgate.api.context import request_context
from embedgate.api.middleware import AccessLogStep, AuditStep, RequestIdStep, SizeLimitStep
from embedgate.errors import ErrorKind, LimitStatus, ServiceError
from embedgate.identity import Permission, Principal, Role
from embedgate.security.audit import AuditLog, MemoryAuditSink
from embedgate.security.gate import Security
from embedgate.security.key_service import KeyService
from embedgate.security.ratelimit import RateLimiter
from embedgate.services.metrics import Metrics
from embedgate.storage.key_store import MemoryKeyStore


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body and answers 200 with its length; a route of its own."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    context = request_context(scope)
    context.principal = Principal(subject="k1", role=Role.WRITER)
    context.limits["requests"] = LimitStatus("requests", limit=10, remaining=9, reset_seconds=6.0)
    context.audit.n_inputs = 3
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def broken(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a route that fails before answering")


def test_request_id_step_stamps_id_and_rate_limit_headers() -> None:
    response = TestClient(RequestIdStep(echo)).post("/x", content=b"abc")
    assert response.status_code == 200 and response.text == "3"
    assert len(response.headers["x-request-id"]) == 16
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    other = TestClient(RequestIdStep(echo)).post("/x", content=b"abc")
    assert other.headers["x-request-id"] != response.headers["x-request-id"]


def test_size_limit_step_refuses_big_headers_and_bodies_declared_or_streamed() -> None:
    app = RequestIdStep(SizeLimitStep(echo, max_body_bytes=10, max_upload_bytes=100))
    client = TestClient(app)
    assert client.post("/x", content=b"x" * 10).text == "10"
    declared = client.post("/x", content=b"x" * 11)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:
        yield b"x" * 8
        yield b"x" * 8

    assert client.post("/x", content=chunks()).status_code == 413  # no content-length
    upload = client.post("/v1/collections/c/documents", content=b"x" * 50)
    assert upload.status_code == 200  # uploads have their own, larger limit
    huge = client.get("/x", headers={"x-big": "a" * 20000})
    assert huge.status_code == 431


def test_access_log_step_counts_every_request_even_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    ok = TestClient(RequestIdStep(AccessLogStep(echo, metrics)))
    assert ok.get("/x").status_code == 200
    crashing = TestClient(
        RequestIdStep(AccessLogStep(broken, metrics)), raise_server_exceptions=False
    )
    with caplog.at_level("INFO", logger="embedgate.access"):
        crashing.get("/y")
    sample = metrics.registry.get_sample_value
    assert sample("embedgate_requests_total", {"route": "unmatched", "status": "200"}) == 1
    assert sample("embedgate_requests_total", {"route": "unmatched", "status": "500"}) == 1
    assert any(getattr(r, "status", None) == 500 for r in caplog.records)


def test_audit_step_records_who_and_how_much_but_not_public_paths() -> None:
    sink = MemoryAuditSink()
    audit = AuditLog(sink)
    client = TestClient(RequestIdStep(AuditStep(echo, audit=lambda: audit)))
    client.post("/v1/embeddings", content=b"secret text", headers={"x-forwarded-for": "1.2.3.4"})
    client.get("/health")
    assert len(sink.records) == 1
    record = sink.records[0]
    assert '"key_id":"k1"' in record and '"role":"writer"' in record and '"n_inputs":3' in record
    assert "secret text" not in record


@pytest.mark.anyio
async def test_the_security_rules_run_without_a_web_framework() -> None:
    """Plain dicts in, a principal and rate-limit headers out: what a gRPC or console surface
    would call."""
    keys = KeyService(MemoryKeyStore(), b"p" * 32, AuditLog(MemoryAuditSink()), cache_ttl=0)
    issued = keys.create("svc", "reader", actor="test", rpm=5)
    security = Security(keys=keys, limiter=RateLimiter())

    ip = security.client_ip("10.0.0.9", {"x-forwarded-for": "6.6.6.6"})
    assert ip == "10.0.0.9"  # no trusted proxies: the header is not believed
    principal = await security.authenticate({"authorization": f"Bearer {issued.key}"}, ip)
    assert principal.role is Role.READER
    charged = await security.authorise(principal, Permission.SEARCH)
    assert [(s.kind, s.limit, s.remaining) for s in charged] == [("requests", 5, 4)]
    with pytest.raises(ServiceError) as refused:
        await security.authorise(principal, Permission.EMBED)
    assert refused.value.kind is ErrorKind.FORBIDDEN
    with pytest.raises(ServiceError) as bad:
        await security.authenticate({"x-api-key": "egk_nope"}, ip)
    assert bad.value.kind is ErrorKind.UNAUTHENTICATED
