"""Real servers for tests, started on loopback with a free port and a temp dir, stopped after.

Redis and PostgreSQL come from Debian's packages (`.ci/run` installs them). PostgreSQL refuses
to run as root, so when the tests run as root its processes run as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="embedgate-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    try:
        _wait_port(port)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PostgresServer:
    """A private PostgreSQL instance that a test can stop and start again (same data)."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://embedgate@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            _as_postgres(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self.root / "data"),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root),
                    "-F",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown: clients' connections are cut, as in a crash or a restart (a
        signal to `runuser` would not reach the server, and SIGTERM waits for clients)."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run(
                _as_postgres(
                    [_pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.root / "data")]
                ),
                capture_output=True,
                timeout=60,
            )
            self.process.wait(timeout=30)


@contextmanager
def postgres_instance() -> Iterator[PostgresServer]:
    """A fresh database on a private PostgreSQL instance, stoppable mid-test."""
    root = Path(tempfile.mkdtemp(prefix="embedgate-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "embedgate",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(root, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL to a fresh database on a private PostgreSQL instance."""
    with postgres_instance() as server:
        yield server.url


@dataclass
class MilvusServer:
    """Milvus Lite's server binary as a process of its own on a TCP port: the remote path
    (`milvus_uri = http://...`), the code a Milvus cluster is reached with."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: str

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def milvus_server() -> Iterator[MilvusServer]:
    import milvus_lite

    lib = Path(milvus_lite.__file__).parent / "lib"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="embedgate-milvus-")
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "GLOG_log_dir": workdir,  # glog's default is /tmp
    }
    log = open(Path(workdir) / "milvus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(lib / "milvus"), str(Path(workdir) / "remote.db"), f"127.0.0.1:{port}", "ERROR"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = MilvusServer(port, process, workdir)
    try:
        _wait_port(port)
        yield server
    finally:
        server.stop()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
