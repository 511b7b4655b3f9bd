"""JWT verification: forged and malformed tokens (docs/security.md), JWKS caching, throttling
and IdP outages."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from embedgate.app import create_app
from embedgate.config import Settings
from embedgate.identity import Role
from embedgate.security.jwt_auth import JwksCache, JwtConfig, JwtVerifier
from support.servers import client_for, fake_factory

ISS, AUD, SECRET = "https://idp.example", "embedgate", b"an-hs256-shared-secret-of-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    data = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private.public_key()))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [jwk(RSA_KEY, "rsa1", "RS256"), jwk(EC_KEY, "ec1", "ES256")]}


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "exp": now + 300,
        "iat": now,
        "role": "writer",
        "collections": ["hr"],
        **over,
    }


def verifier(
    algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256"), fetch: Any = None
) -> JwtVerifier:
    config = JwtConfig(algorithms, ISS, AUD, secret=SECRET, jwks_url="https://idp.example/jwks")

    async def default_fetch(_: str) -> dict[str, Any]:
        return JWKS

    return JwtVerifier(config, JwksCache(config.jwks_url or "", 300, 30, fetch or default_fetch))


def check(v: JwtVerifier, token: str) -> Any:
    return asyncio.run(v.verify(token))


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_tokens_map_claims_to_a_principal() -> None:
    v = verifier()
    for token in (
        jwt.encode(claims(), SECRET, algorithm="HS256"),
        jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"}),
        jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec1"}),
    ):
        principal = check(v, token)
        assert principal is not None
        assert (principal.role, principal.collections, principal.subject) == (
            Role.WRITER,
            ("hr",),
            "jwt:alice",
        )


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_jwt_alg_none_is_refused_in_any_case(alg: str) -> None:
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."
    assert check(verifier(), token) is None


def test_jwt_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    header, payload = b64({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}), b64(claims())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert check(verifier(), token) is None
    assert check(verifier(algorithms=("RS256",)), token) is None


@pytest.mark.parametrize(
    "override",
    [
        {"iss": None},
        {"iss": "https://evil.example"},
        {"aud": None},
        {"aud": "someone-else"},
        {"exp": None},
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600},
        {"role": "root"},
        {"role": None},
    ],
)
def test_jwt_with_missing_or_wrong_claims_is_refused(override: dict[str, Any]) -> None:
    body = {k: v for k, v in claims(**override).items() if v is not None}
    assert check(verifier(), jwt.encode(body, SECRET, algorithm="HS256")) is None


def test_jwt_with_an_unknown_crit_header_is_refused() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"crit": ["exp2"], "exp2": 1})
    assert check(verifier(), token) is None


# the forged HS512 token is signed with the test's short secret on purpose
@pytest.mark.filterwarnings("ignore:The HMAC key is .* below the minimum")
def test_unpinned_algorithm_and_ignored_key_headers() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert check(verifier(), token) is None
    # a token pointing at its own key material is not believed
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims(),
        other,
        algorithm="RS256",
        headers={
            "kid": "evil",
            "jku": "https://evil.example/jwks",
            "jwk": jwk(other, "evil", "RS256"),
        },
    )
    assert check(verifier(), forged) is None


def test_jwks_refresh_is_throttled_and_idp_outage_fails_closed() -> None:
    calls: list[float] = []
    up = {"ok": True}

    async def fetch(_: str) -> dict[str, Any]:
        calls.append(time.monotonic())
        if not up["ok"]:
            raise ConnectionError("idp down")
        return JWKS

    cache = JwksCache("u", ttl=0.6, refresh_interval=0.3, fetch=fetch)
    v = JwtVerifier(JwtConfig(("RS256",), ISS, AUD, jwks_url="u"), cache)
    good = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"})
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})
    assert check(v, good) is not None
    for _ in range(20):  # unknown kids cannot hammer the IdP
        assert check(v, unknown) is None
    assert len(calls) == 1
    up["ok"] = False
    time.sleep(0.35)
    assert check(v, good) is not None  # refresh failed, cached keys still within TTL
    time.sleep(0.4)
    assert check(v, good) is None  # past the TTL with the IdP down: fail closed
    up["ok"] = True
    time.sleep(0.31)
    assert check(v, good) is not None


class _Jwks(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(JWKS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def test_jwt_end_to_end_over_http(tmp_path: Path, jwks_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        jwt_algorithms=["RS256", "HS256"],
        jwt_issuer=ISS,
        jwt_audience=AUD,
        jwt_jwks_url=jwks_url,
        jwt_secret=SECRET.decode(),
    )
    app = create_app(settings, fake_factory())
    with client_for(app, authenticated=False) as c:
        writer = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa1"})
        ok = c.post(
            "/v1/embeddings", json={"input": "hi"}, headers={"Authorization": f"Bearer {writer}"}
        )
        assert ok.status_code == 200
        reader = jwt.encode(claims(role="reader"), SECRET, algorithm="HS256")
        assert (
            c.post(
                "/v1/embeddings",
                json={"input": "hi"},
                headers={"Authorization": f"Bearer {reader}"},
            ).status_code
            == 403
        )
        expired = jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256")
        response = c.post(
            "/v1/embeddings", json={"input": "hi"}, headers={"Authorization": f"Bearer {expired}"}
        )
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert c.get("/health").status_code == 200


def test_jwt_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Settings(jwt_algorithms=["none"])
    from embedgate.services.security import jwt_verifier

    with pytest.raises(ValueError, match="jwt_issuer"):
        jwt_verifier(Settings(jwt_algorithms=["HS256"], jwt_secret="x"))
    with pytest.raises(ValueError, match="jwks_url"):
        jwt_verifier(Settings(jwt_algorithms=["RS256"], jwt_issuer=ISS, jwt_audience=AUD))


VALID_TOKEN = jwt.encode(claims(exp=int(time.time()) + 86400), SECRET, algorithm="HS256")
PROPERTY_VERIFIER = verifier()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(VALID_TOKEN) - 1), st.characters(codec="ascii"))
def test_mutated_tokens_never_verify(position: int, char: str) -> None:
    mutated = VALID_TOKEN[:position] + char + VALID_TOKEN[position + 1 :]
    if mutated != VALID_TOKEN:
        assert check(PROPERTY_VERIFIER, mutated) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_tokens_never_verify(token: str) -> None:
    assert check(PROPERTY_VERIFIER, token) is None
