"""The security checklist over HTTP (docs/security.md maps case ids to these tests), the
deny-by-default route walk, and the secure defaults. Each case checks status, envelope and continued health."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from embedgate.api.guard import PUBLIC_PATHS, route_table, unguarded_routes
from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine import EmbedRequest
from embedgate.identity import Permission
from embedgate.security.audit import MemoryAuditSink
from embedgate.security.client_ip import client_ip, parse_networks
from embedgate.storage.key_store import MemoryKeyStore
from support.fake_upstream import Behaviour, fake_upstream, gateway_factory
from support.servers import admin_key, client_for, fake_factory


@pytest.fixture(scope="module", params=["local", "gateway"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, MemoryKeyStore, MemoryAuditSink]]:
    """Every check runs twice: with the model in this server, and in gateway mode with the
    forward passes on an upstream server (same keys, roles, limits and audit)."""
    store, audit = MemoryKeyStore(), MemoryAuditSink()
    settings = Settings(data_dir=tmp_path_factory.mktemp("sec"), failed_auth_per_minute=1000)
    with contextlib.ExitStack() as stack:
        factory = fake_factory()
        if request.param == "gateway":
            tiny = request.getfixturevalue("tiny_qwen3_dir")
            upstream = stack.enter_context(fake_upstream(Behaviour(dimensions=64)))
            factory = gateway_factory(tiny, upstream)
        app = create_app(settings, factory, key_store=store, audit_sink=audit)
        yield stack.enter_context(client_for(app, authenticated=False)), store, audit


@pytest.fixture(scope="module")
def client(served: tuple[TestClient, MemoryKeyStore, MemoryAuditSink]) -> TestClient:
    return served[0]


@pytest.fixture(scope="module")
def store(served: tuple[TestClient, MemoryKeyStore, MemoryAuditSink]) -> MemoryKeyStore:
    return served[1]


@pytest.fixture(scope="module")
def audit(served: tuple[TestClient, MemoryKeyStore, MemoryAuditSink]) -> MemoryAuditSink:
    return served[2]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_key(client: TestClient, role: str, **extra: Any) -> str:
    admin = admin_key(client.app)  # type: ignore[arg-type]
    response = client.post(
        "/v1/admin/keys", json={"name": f"{role}-key", "role": role, **extra}, headers=bearer(admin)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if code:
        assert body["error"]["code"] == code
    return dict(body["error"])


def healthy(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    ok = client.post("/v1/embeddings", json={"input": "ok"}, headers=bearer(admin_key(client.app)))  # type: ignore[arg-type]
    assert ok.status_code == 200


EMBED = {"input": "hello"}


def test_a_request_without_credentials_is_401_in_the_openai_envelope(client: TestClient) -> None:
    error = assert_error(client.post("/v1/embeddings", json=EMBED), 401, "invalid_api_key")
    assert error["type"] == "invalid_request_error"
    healthy(client)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic {key}", "Token {key}", "{key}"])
def test_authorization_schemes_other_than_bearer_are_401(client: TestClient, header: str) -> None:
    value = header.format(key=admin_key(client.app))  # type: ignore[arg-type]
    assert_error(client.post("/v1/embeddings", json=EMBED, headers={"Authorization": value}), 401)
    healthy(client)


def test_lowercase_bearer_and_x_api_key_are_accepted(client: TestClient) -> None:
    key = admin_key(client.app)  # type: ignore[arg-type]
    assert (
        client.post(
            "/v1/embeddings", json=EMBED, headers={"Authorization": f"bearer {key}"}
        ).status_code
        == 200
    )
    assert client.post("/v1/embeddings", json=EMBED, headers={"x-api-key": key}).status_code == 200


def test_a_key_in_the_query_string_is_ignored(client: TestClient) -> None:
    key = admin_key(client.app)  # type: ignore[arg-type]
    assert_error(client.post(f"/v1/embeddings?api_key={key}", json=EMBED), 401)


@pytest.mark.parametrize("suffix", [" ", "\t", "  x"])
def test_whitespace_around_the_key_is_handled(client: TestClient, suffix: str) -> None:
    key = admin_key(client.app)  # type: ignore[arg-type]
    response = client.post(
        "/v1/embeddings", json=EMBED, headers={"Authorization": f"Bearer {key}{suffix}"}
    )
    assert response.status_code in (200, 401)
    healthy(client)


def test_a_key_with_a_bad_checksum_is_refused_without_a_lookup(
    client: TestClient, store: MemoryKeyStore
) -> None:
    key = make_key(client, "writer")
    forged = key[:-6] + ("aaaaaa" if not key.endswith("aaaaaa") else "bbbbbb")
    before = store.lookups
    assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(forged)), 401)
    assert store.lookups == before


def test_a_huge_authorization_header_is_rejected_fast(client: TestClient) -> None:
    response = client.post(
        "/v1/embeddings", json=EMBED, headers={"Authorization": "Bearer " + "a" * 1_000_000}
    )
    assert_error(response, 431)
    healthy(client)


@pytest.mark.parametrize(
    "key", ["egk_'; DROP TABLE api_keys; --", "' OR '1'='1", "egk_abc%00def", "\\x00"]
)
def test_keys_with_metacharacters_are_plain_401s(client: TestClient, key: str) -> None:
    assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(key)), 401)
    healthy(client)


def test_revoked_and_rotated_keys_stop_working(client: TestClient, store: MemoryKeyStore) -> None:
    admin = bearer(admin_key(client.app))  # type: ignore[arg-type]
    key = make_key(client, "writer")
    key_id = key.split("_")[1]
    assert client.delete(f"/v1/admin/keys/{key_id}", headers=admin).status_code == 200
    assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(key)), 401)
    old = make_key(client, "writer")
    rotated = client.post(
        f"/v1/admin/keys/{old.split('_')[1]}/rotate", json={"grace": "0s"}, headers=admin
    )
    assert rotated.status_code == 201
    assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(old)), 401)
    assert (
        client.post("/v1/embeddings", json=EMBED, headers=bearer(rotated.json()["key"])).status_code
        == 200
    )
    expiring = make_key(client, "writer", expires_in="1s")
    from datetime import UTC, datetime, timedelta

    store.update(expiring.split("_")[1], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    client.app.state.embedgate.keys.invalidate(expiring.split("_")[1])  # type: ignore[attr-defined]
    assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(expiring)), 401)


def test_each_role_can_do_exactly_its_permissions(client: TestClient) -> None:
    reader, writer = make_key(client, "reader"), make_key(client, "writer")
    error = assert_error(client.post("/v1/embeddings", json=EMBED, headers=bearer(reader)), 403)
    assert "reader" in error["message"]
    assert client.get("/v1/models", headers=bearer(reader)).status_code == 200
    for method, path in (
        ("get", "/v1/admin/keys"),
        ("get", "/v1/admin/audit"),
        ("get", "/metrics"),
        ("delete", "/v1/admin/keys/x"),
        ("get", "/openapi.json"),
    ):
        assert_error(getattr(client, method)(path, headers=bearer(writer)), 403)
    assert client.post("/v1/embeddings", json=EMBED, headers=bearer(writer)).status_code == 200


def test_a_writer_cannot_create_an_admin_key(client: TestClient) -> None:
    writer = make_key(client, "writer")
    body = {"name": "me", "role": "admin"}
    assert_error(client.post("/v1/admin/keys", json=body, headers=bearer(writer)), 403)
    own_id = writer.split("_")[1]
    assert_error(client.post(f"/v1/admin/keys/{own_id}/rotate", headers=bearer(writer)), 403)


def test_key_listings_are_redacted(client: TestClient, store: MemoryKeyStore) -> None:
    key = make_key(client, "reader")
    listing = client.get("/v1/admin/keys", headers=bearer(admin_key(client.app))).text  # type: ignore[arg-type]
    assert key not in listing and admin_key(client.app) not in listing  # type: ignore[arg-type]
    for record in store.all():
        assert record.digest not in listing
    assert "…" + key[-4:] in listing


def test_rate_limit_requests_and_headers(client: TestClient) -> None:
    key = make_key(client, "writer", rpm=3)
    statuses = [client.post("/v1/embeddings", json=EMBED, headers=bearer(key)) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[0].headers["x-ratelimit-limit-requests"] == "3"
    assert statuses[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert statuses[0].headers["x-ratelimit-reset-requests"].endswith("s")
    error = assert_error(statuses[3], 429, "rate_limit_exceeded")
    assert error["type"] == "requests"
    assert int(statuses[3].headers["retry-after"]) >= 1
    assert int(statuses[3].headers["retry-after-ms"]) >= 1
    healthy(client)


def test_a_key_without_limits_gets_no_rate_limit_headers(client: TestClient) -> None:
    """As the README says: the headers count down a limit, and this key has none."""
    key = make_key(client, "writer")
    reply = client.post("/v1/embeddings", json=EMBED, headers=bearer(key))
    assert reply.status_code == 200
    assert not [name for name in reply.headers if name.startswith("x-ratelimit")]


def tokens(client: TestClient, text: str) -> int:
    """What the served model's tokenizer makes of `text` (with its special tokens)."""
    engine = client.app.state.embedgate.engine  # type: ignore[attr-defined]
    return len(engine.tokenize(EmbedRequest([text]))[0])


def test_tokens_per_minute_count_input_tokens(client: TestClient) -> None:
    first_text, second_text = "one two three four", "a b c d e f g h i j"
    budget = tokens(client, first_text) + tokens(client, "tiny")
    assert tokens(client, second_text) > tokens(client, "tiny")
    key = make_key(client, "writer", tpm=budget)
    first = client.post("/v1/embeddings", json={"input": first_text}, headers=bearer(key))
    assert first.status_code == 200
    assert first.json()["usage"]["prompt_tokens"] == tokens(client, first_text)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(tokens(client, "tiny"))
    second = client.post("/v1/embeddings", json={"input": second_text}, headers=bearer(key))
    error = assert_error(second, 429, "rate_limit_exceeded")
    assert error["type"] == "tokens"
    assert f"{tokens(client, second_text)} tokens" in error["message"]
    assert (
        client.post("/v1/embeddings", json={"input": "tiny"}, headers=bearer(key)).status_code
        == 200
    )


def test_failed_auth_is_limited_per_ip_for_failing_credentials_only(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, failed_auth_per_minute=3), fake_factory())
    with client_for(app, authenticated=False) as c:
        codes = [
            c.post("/v1/embeddings", json=EMBED, headers=bearer("egk_nope")).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]
        # a valid key from the same address is never refused for other callers' failures
        assert (
            c.post("/v1/embeddings", json=EMBED, headers=bearer(admin_key(app))).status_code == 200
        )
        assert c.post("/v1/embeddings", json=EMBED, headers=bearer("egk_no")).status_code == 429


def test_deny_by_default_route_walk(client: TestClient) -> None:
    table = dict(route_table(client.app.routes))  # type: ignore[attr-defined]
    console = {"/ui", "/ui/", "/ui/assets/{build}/{path:path}"}  # static, public by design
    assert {path for path, guard in table.items() if guard is None} == set(PUBLIC_PATHS) | console
    assert table["/v1/me"] is Permission.SEARCH and table["/v1/tokenize"] is Permission.EMBED
    assert table["/v1/admin/stats"] is Permission.ADMIN
    assert table["/v1/admin/audit/verify"] is Permission.ADMIN
    assert table["/v1/embeddings"] is Permission.EMBED
    assert table["/v1/admin/keys"] is Permission.ADMIN and table["/metrics"] is Permission.METRICS
    assert table["/openapi.json"] is Permission.ADMIN and table["/v1/models"] is Permission.SEARCH
    assert len(table) >= 11


def test_a_monitor_key_reads_metrics_and_nothing_else(client: TestClient) -> None:
    """Prometheus holds a `monitor` key: a scraper's credential stolen from its config file
    reads counters, never embeds, searches or manages keys."""
    monitor = bearer(make_key(client, "monitor"))
    assert "embedgate_build_info" in client.get("/metrics", headers=monitor).text
    assert_error(client.post("/v1/embeddings", json={"input": "x"}, headers=monitor), 403)
    assert_error(client.get("/v1/admin/keys", headers=monitor), 403)
    assert_error(client.get("/v1/collections", headers=monitor), 403)
    assert_error(client.get("/openapi.json", headers=monitor), 403)
    writer = bearer(make_key(client, "writer"))
    assert_error(client.get("/metrics", headers=writer), 403)


def test_an_unguarded_route_stops_the_app() -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/v1/oops")
    async def oops() -> dict[str, str]:
        return {}

    @router.get("/uix/oops")  # near the console's prefix is not inside it
    async def near() -> dict[str, str]:
        return {}

    assert unguarded_routes([*create_app(Settings(), fake_factory()).routes, *router.routes]) == [
        "/v1/oops",
        "/uix/oops",
    ]


def test_public_routes_and_admin_only_extras(client: TestClient) -> None:
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    assert_error(client.get("/metrics"), 401)
    assert_error(client.get("/openapi.json"), 401)
    admin = bearer(admin_key(client.app))  # type: ignore[arg-type]
    assert "embedgate_requests_total" in client.get("/metrics", headers=admin).text
    assert "/v1/embeddings" in client.get("/openapi.json", headers=admin).json()["paths"]
    assert client.get("/docs").status_code == 404
    response = client.options(
        "/v1/embeddings",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_audit_records_requests_without_text(client: TestClient, audit: MemoryAuditSink) -> None:
    secret_text = "confidential merger plan"
    key = make_key(client, "writer")
    client.post(
        "/v1/embeddings",
        json={"input": [secret_text], "user": "alice", "dimensions": 32},
        headers=bearer(key),
    )
    records = [json.loads(line) for line in audit.records]
    mine = [
        r
        for r in records
        if r.get("key_id") == key.split("_")[1] and r.get("route") == "/v1/embeddings"
    ]
    assert mine and mine[-1]["status"] == 200 and mine[-1]["n_inputs"] == 1
    assert mine[-1]["user"] == "alice" and mine[-1]["dimensions"] == 32
    assert mine[-1]["n_tokens"] == tokens(client, secret_text)
    for field in ("ts", "request_id", "role", "client_ip", "method", "latency_ms"):
        assert field in mine[-1]
    assert all(secret_text not in line for line in audit.records)
    admin = bearer(admin_key(client.app))  # type: ignore[arg-type]
    found = client.get(
        f"/v1/admin/audit?key_id={key.split('_')[1]}&status=200", headers=admin
    ).json()["data"]
    assert found and all(r["key_id"] == key.split("_")[1] for r in found)
    usage = client.get("/v1/admin/usage", headers=admin).json()["data"]
    mine_usage = tokens(client, secret_text)
    assert any(u["key_id"] == key.split("_")[1] and u["tokens"] == mine_usage for u in usage)


def test_admin_action_fails_closed_over_http(
    client: TestClient, audit: MemoryAuditSink, store: MemoryKeyStore
) -> None:
    before = store.count()
    audit.broken = True
    try:
        response = client.post(
            "/v1/admin/keys",
            json={"name": "x", "role": "reader"},
            headers=bearer(admin_key(client.app)),
        )  # type: ignore[arg-type]
        assert_error(response, 503, "audit_unavailable")
    finally:
        audit.broken = False
    assert store.count() == before
    healthy(client)


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("10.0.0.5", "203.0.113.9", trusted) == "203.0.113.9"
    assert client_ip("10.0.0.5", "198.51.100.1, 203.0.113.9, 10.0.0.7", trusted) == "203.0.113.9"
    assert client_ip("192.0.2.1", "203.0.113.9", trusted) == "192.0.2.1"
    assert client_ip("10.0.0.5", "not-an-ip", trusted) == "10.0.0.5"
    assert client_ip("10.0.0.5", None, trusted) == "10.0.0.5"
    sink = MemoryAuditSink()
    app = create_app(Settings(data_dir=tmp_path), fake_factory(), audit_sink=sink)
    with client_for(app) as c:
        c.post("/v1/embeddings", json=EMBED, headers={"X-Forwarded-For": "203.0.113.9"})
    assert "203.0.113.9" not in "".join(sink.records)


def test_requests_take_the_forwarded_address_only_behind_a_trusted_proxy(tmp_path: Path) -> None:
    def forwarded(value: str | None) -> Headers:
        return Headers({"x-forwarded-for": value} if value else {})

    for trusted, expected in (([], "10.0.0.5"), (["10.0.0.0/8"], "203.0.113.9")):
        settings = Settings(data_dir=tmp_path / str(len(trusted)), trusted_proxies=trusted)
        app = create_app(settings, fake_factory())
        with client_for(app):
            security = app.state.embedgate.security
            assert security.client_ip("10.0.0.5", forwarded("203.0.113.9")) == expected
            assert security.client_ip("10.0.0.5", forwarded(None)) == "10.0.0.5"
            assert security.client_ip("192.0.2.1", forwarded("203.0.113.9")) == "192.0.2.1"


def test_a_canary_key_and_text_never_reach_logs_or_audit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemoryAuditSink()
    app = create_app(Settings(data_dir=tmp_path), fake_factory(), audit_sink=sink)
    with caplog.at_level(logging.DEBUG), client_for(app, authenticated=False) as c:
        canary = make_key(c, "writer")
        bodies = [
            c.post("/v1/embeddings", json=EMBED, headers=bearer(canary)).text,
            c.post("/v1/embeddings", json=EMBED, headers=bearer(canary + "x")).text,
            c.post("/v1/embeddings", json=EMBED, headers=bearer(canary[:-1])).text,
            c.post("/v1/embeddings", json={"input": canary}, headers=bearer("nope")).text,
            c.get("/v1/admin/keys", headers=bearer(admin_key(app))).text,
        ]
        metrics = c.get("/metrics", headers=bearer(admin_key(app))).text
    for text in [*bodies, metrics, caplog.text, *sink.records]:
        assert canary not in text and canary[:-1] not in text


def test_cors_only_when_configured(tmp_path: Path) -> None:
    app = create_app(
        Settings(data_dir=tmp_path, cors_origins=["https://console.example"]), fake_factory()
    )
    with client_for(app) as c:
        ok = c.options(
            "/v1/embeddings",
            headers={"Origin": "https://console.example", "Access-Control-Request-Method": "POST"},
        )
        assert ok.headers.get("access-control-allow-origin") == "https://console.example"
        other = c.options(
            "/v1/embeddings",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_audit_filters_by_time(client: TestClient) -> None:
    admin = bearer(admin_key(client.app))  # type: ignore[arg-type]
    client.post("/v1/embeddings", json=EMBED, headers=admin)
    everything = client.get("/v1/admin/audit?limit=10000", headers=admin).json()["data"]
    assert everything
    newest = everything[0]["ts"]
    later = client.get("/v1/admin/audit", params={"since": newest}, headers=admin).json()["data"]
    assert later and all(r["ts"] >= newest for r in later)
    assert (
        client.get(
            "/v1/admin/audit", params={"until": "2000-01-01T00:00:00Z"}, headers=admin
        ).json()["data"]
        == []
    )
    route = client.get("/v1/admin/audit", params={"route": "/v1/admin/keys"}, headers=admin).json()[
        "data"
    ]
    assert all(r["route"] == "/v1/admin/keys" for r in route)


def test_a_request_refused_on_tokens_keeps_its_request_slot(client: TestClient) -> None:
    key = make_key(client, "writer", rpm=2, tpm=6)
    big = client.post("/v1/embeddings", json={"input": "a b c d e f g h"}, headers=bearer(key))
    assert_error(big, 429, "rate_limit_exceeded")
    small = [
        client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key)) for _ in range(3)
    ]
    assert [r.status_code for r in small] == [200, 200, 429]
    assert small[2].json()["error"]["type"] == "requests"


def test_invalid_requests_count_against_the_request_limit(client: TestClient) -> None:
    key = make_key(client, "writer", rpm=2)
    bad = client.post("/v1/embeddings", json={"input": []}, headers=bearer(key))
    assert bad.status_code == 400
    assert client.post("/v1/embeddings", json=EMBED, headers=bearer(key)).status_code == 200
    over = client.post("/v1/embeddings", json={"input": []}, headers=bearer(key))
    assert_error(over, 429, "rate_limit_exceeded")
