"""Every failure is a clear 4xx/5xx in OpenAI's envelope, and the service stays healthy.
The "embedding input" cases of docs/security.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.engine.backends.fake import FakeBackend
from support.servers import client_for, fake_factory

POISON = FakeBackend().word_id("poison")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(
        Settings(data_dir=tmp_path_factory.mktemp("errors"), max_body_bytes=1024 * 1024),
        fake_factory(FakeBackend(poison_token=POISON)),
    )
    with client_for(app) as c:
        yield c


def assert_envelope(
    response: Any, status: int, param: str | None = "?", code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if param != "?":
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def still_healthy(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    ok = client.post("/v1/embeddings", json={"input": "still alive", "model": "fake-qwen3"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "bad", ["", [], [""], [1, "a"], None, ["a", 1], [[1], "a"], [[]], {"a": 1}, True, [True]]
)
def test_bad_input_shapes_are_400(client: TestClient, bad: object) -> None:
    assert_envelope(client.post("/v1/embeddings", json={"input": bad}), 400, "input")
    still_healthy(client)


def test_missing_input(client: TestClient) -> None:
    error = assert_envelope(client.post("/v1/embeddings", json={"model": "fake"}), 400, "input")
    assert "input" in error["message"]


def test_more_than_2048_inputs_is_400(client: TestClient) -> None:
    error = assert_envelope(
        client.post("/v1/embeddings", json={"input": ["a"] * 2049}), 400, "input"
    )
    assert "2049" in error["message"] and "2048" in error["message"]
    still_healthy(client)


def test_a_huge_body_is_413(client: TestClient) -> None:
    response = client.post(
        "/v1/embeddings",
        content=b'{"input": "' + b"a" * (2 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_envelope(response, 413, code="request_too_large")
    still_healthy(client)


def test_too_many_tokens_is_400_and_says_by_how_many(client: TestClient) -> None:
    error = assert_envelope(
        client.post("/v1/embeddings", json={"input": "word " * 600}), 400, "input"
    )
    assert (
        "601 tokens" in error["message"]
        and "512" in error["message"]
        and "truncate" in error["message"]
    )
    ok = client.post("/v1/embeddings", json={"input": "word " * 600, "truncate": True})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 512


@pytest.mark.parametrize("dims", [0, -1, 31, 65, 1.5, "512", True, None])
def test_bad_dimensions_are_400(client: TestClient, dims: object) -> None:
    body: dict[str, Any] = {"input": "a", "dimensions": dims}
    if dims is None:
        body["dimensions"] = float("nan")
        response = client.post(
            "/v1/embeddings",
            content=b'{"input": "a", "dimensions": NaN}',
            headers={"content-type": "application/json"},
        )
        assert_envelope(response, 400)
        return
    assert_envelope(client.post("/v1/embeddings", json=body), 400, "dimensions")
    still_healthy(client)


@pytest.fixture(scope="module")
def ids_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server that accepts token-id input (off by default)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("ids"), accept_token_ids=True)
    with client_for(create_app(settings, fake_factory())) as c:
        yield c


def test_token_ids_are_refused_by_default_with_the_langchain_hint(client: TestClient) -> None:
    for ids in ([1, 2, 3], [[1, 2], [3]]):
        error = assert_envelope(client.post("/v1/embeddings", json={"input": ids}), 400, "input")
        assert "check_embedding_ctx_length=False" in error["message"]
        assert "accept_token_ids" in error["message"]
    still_healthy(client)


@pytest.mark.parametrize("token", [-1, 30_000, 2**31, 2**70])
def test_token_ids_outside_the_vocabulary_are_400(ids_client: TestClient, token: int) -> None:
    client = ids_client
    error = assert_envelope(client.post("/v1/embeddings", json={"input": [1, token]}), 400, "input")
    if token < 2**63:  # larger numbers arrive as JSON floats and are refused as non-integers
        assert "check_embedding_ctx_length=False" in error["message"]
    still_healthy(client)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"input": "a"', "application/json", 400),
        (b'{"input": "\xff\xfe"}', "application/json", 400),
        (b"input=a", "application/x-www-form-urlencoded", 415),
        (b'{"input": "a"}', "text/plain", 415),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b'{"input": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", "application/json", 400),
        (b"", "application/json", 400),
        (b'"just a string"', "application/json", 400),
    ],
)
def test_malformed_bodies_are_400(
    client: TestClient, content: bytes, content_type: str, status: int
) -> None:
    response = client.post(
        "/v1/embeddings", content=content, headers={"content-type": content_type}
    )
    assert_envelope(response, status)
    still_healthy(client)


def test_non_finite_model_output_is_a_clean_500(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"input": "this is poison"})
    error = assert_envelope(response, 500, code="model_error")
    assert "NaN" in error["message"]
    still_healthy(client)


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_envelope(client.get("/v1/nope"), 404, code="not_found")
    assert_envelope(client.get("/v1/embeddings"), 405, code="method_not_allowed")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models/"), ("POST", "/v1/embeddings/")])
def test_trailing_slashes_are_404_never_a_redirect(
    client: TestClient, method: str, path: str
) -> None:
    """A 307 built from a forged Host header, before authentication, and a 307 that makes a
    client send its text again: neither happens."""
    response = client.request(
        method,
        path,
        headers={"Host": "evil.example", "Authorization": ""},
        json={"input": "x"},
        follow_redirects=False,
    )
    assert_envelope(response, 404, code="not_found")
    assert "location" not in response.headers


def test_duplicate_json_keys_are_400(client: TestClient) -> None:
    body = b'{"input": "a", "input": ["b"]}'
    headers = {"Content-Type": "application/json"}
    error = assert_envelope(client.post("/v1/embeddings", content=body, headers=headers), 400)
    assert "same key twice" in error["message"]
    # a value that merely mentions a key (or the key's name as a value) is fine
    fine = b'{"input": ["the field \\"input\\" is required", "input"], "user": "input"}'
    assert client.post("/v1/embeddings", content=fine, headers=headers).status_code == 200


def test_model_null_is_400_but_model_may_be_left_out(client: TestClient) -> None:
    error = assert_envelope(client.post("/v1/embeddings", json={"input": "a", "model": None}), 400)
    assert "not null" in error["message"]
    assert client.post("/v1/embeddings", json={"input": "a"}).status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    error = assert_envelope(
        client.post("/v1/embeddings", json={"input": "a", "model": "gpt-4"}),
        404,
        "model",
        "model_not_found",
    )
    assert "fake-qwen3" in error["message"]


def test_unknown_field_is_named(client: TestClient) -> None:
    error = assert_envelope(
        client.post("/v1/embeddings", json={"input": "a", "dimension": 32}), 400, "dimension"
    )
    assert "dimension" in error["message"]


def test_instruction_rules(client: TestClient) -> None:
    body = {"input": "a", "input_type": "document", "instruction": "x"}
    assert_envelope(client.post("/v1/embeddings", json=body), 400, "instruction")
    body = {"input": [1, 2], "input_type": "query"}
    assert_envelope(client.post("/v1/embeddings", json=body), 400)
