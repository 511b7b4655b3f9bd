"""The image as a user runs it, on a real Docker daemon: built air-gapped from the wheelhouse
(`docker build --network=none`), non-root, healthy by its own HEALTHCHECK, the admin key's
path in the logs and never the key, the same vectors as `embedgate serve` on the host, keys
kept across `docker restart` and a new container on the same volume, SIGTERM honoured."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.docker import IMAGE, Build, Docker
from support.processes import serving
from support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.xdist_group("docker")]

TEXTS = [
    "How many days of annual leave do new employees get?",
    "VPN 连不上怎么办",
    "Expense reports are due on the fifth working day of the month.",
]


@dataclass
class Container:
    docker: Docker
    name: str
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> str:
        return self.docker.run(
            "inspect", "--format", "{{.State.Health.Status}}", self.name
        ).stdout.strip()

    def wait_healthy(self, seconds: float = 240) -> float:
        started = time.monotonic()
        while (status := self.health()) != "healthy":
            assert status != "unhealthy", self.docker.run("logs", self.name).stderr[-3000:]
            assert time.monotonic() - started < seconds, f"still {status} after {seconds} s"
            time.sleep(1)
        return time.monotonic() - started

    def key(self) -> str:
        return self.docker.run(
            "exec", self.name, "cat", "/var/lib/embedgate/admin.key"
        ).stdout.strip()

    def logs(self) -> str:
        done = self.docker.run("logs", self.name)
        return done.stdout + done.stderr


@pytest.fixture
def volume(docker: Docker) -> Iterator[str]:
    name = f"embedgate-test-{os.getpid()}-{time.monotonic_ns()}"
    docker.run("volume", "create", name)
    yield name
    docker.run("volume", "rm", "--force", name, check=False)


@pytest.fixture
def containers(docker: Docker) -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        docker.run("rm", "--force", container.name, check=False)


def run_container(docker: Docker, volume: str, started: list[Container]) -> Container:
    container = Container(docker, f"{volume}-{len(started)}", free_port())
    docker.run(
        "run",
        "--detach",
        "--name",
        container.name,
        "--publish",
        f"127.0.0.1:{container.port}:8000",
        "--volume",
        f"{volume}:/var/lib/embedgate",
        IMAGE,
    )
    started.append(container)
    return container


def embed(base: str, key: str, texts: list[str]) -> np.ndarray:
    response = httpx.post(
        base + "/v1/embeddings",
        json={"input": texts, "model": "all-MiniLM-L6-v2"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def test_the_air_gapped_image_serves_the_hosts_vectors_as_non_root(
    docker: Docker, embedgate_image: Build, volume: str, containers: list[Container], tmp_path: Path
) -> None:
    assert embedgate_image.size_bytes < 2_500_000_000  # torch is most of it; no compilers
    container = run_container(docker, volume, containers)
    became_healthy = container.wait_healthy()

    assert docker.run("exec", container.name, "id", "-u").stdout.strip() == "10001"
    assert (
        docker.run("exec", container.name, "sh", "-c", "command -v gcc cc g++ || true").stdout == ""
    )
    key = container.key()
    logs = container.logs()
    assert "/var/lib/embedgate/admin.key" in logs and key not in logs

    unauthenticated = httpx.post(container.base + "/v1/embeddings", json={"input": "x"})
    assert unauthenticated.status_code == 401  # on 0.0.0.0 inside, auth stays on
    in_container = embed(container.base, key, TEXTS)
    with serving(tmp_path / "host") as host:
        on_host = embed(host.base, host.admin["Authorization"].split()[1], TEXTS)
    assert in_container.shape == (3, 384)
    assert float(np.abs(in_container - on_host).max()) <= 1e-5
    print(
        f"healthy {became_healthy:.0f} s after docker run; image {embedgate_image.size_bytes / 1e9:.2f} GB"
    )


def test_keys_survive_restart_and_a_new_container_and_sigterm_stops_it_fast(
    docker: Docker, embedgate_image: Build, volume: str, containers: list[Container]
) -> None:
    first = run_container(docker, volume, containers)
    first.wait_healthy()
    key = first.key()

    docker.run("restart", "--time", "30", first.name)
    first.wait_healthy()
    assert first.key() == key
    assert embed(first.base, key, TEXTS[:1]).shape == (1, 384)

    started = time.monotonic()
    docker.run("stop", "--time", "30", first.name)  # SIGTERM; SIGKILL only after 30 s
    stopped_in = time.monotonic() - started
    assert stopped_in < 10, f"docker stop took {stopped_in:.1f} s"
    exit_code = docker.run("inspect", "--format", "{{.State.ExitCode}}", first.name).stdout
    assert exit_code.strip() in ("0", "143"), exit_code  # a clean exit, not SIGKILL's 137

    second = run_container(docker, volume, containers)  # a new container, the same volume
    second.wait_healthy()
    assert second.key() == key
    assert embed(second.base, key, TEXTS[:1]).shape == (1, 384)
    assert "created the first admin key" not in second.logs()  # it found the old one
