"""What the benchmarks share: the test suite's helpers (ports, servers, Redis), percentiles,
resident memory, and the host line every result is recorded with.

Importing it puts tests/ on the path, so a benchmark starts servers exactly as the tests do
(`support.processes`, `support.services`) instead of carrying its own copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from host import host_line  # noqa: E402
from support.processes import Served, start_serve, stop, wait_served  # noqa: E402
from support.services import free_port, redis_server  # noqa: E402
from vocabulary import PROSE_WORDS, WORDS_EN, WORDS_ZH  # noqa: E402

__all__ = [
    "PROSE_WORDS",
    "WORDS_EN",
    "WORDS_ZH",
    "HttpServer",
    "Served",
    "free_port",
    "host_line",
    "model_process_rss_mib",
    "percentile",
    "redis_server",
    "rss_mib",
    "start_http_server",
    "start_serve",
    "stop",
    "wait_served",
]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by rank: the value at or below which q of the samples lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float | None:
    """A process's resident memory in MiB, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def model_process_rss_mib(server_pid: int) -> float | None:
    """The model process's memory: it is the server's only child (started by a thread)."""
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return rss_mib(int(children[0]))
    return None


@dataclass
class HttpServer:
    """An `embedgate serve` on a free port of this machine, for load generators."""

    port: int
    process: subprocess.Popen[bytes]
    key: str = ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_http_server(
    model: str | None, dtype: str, env_extra: dict[str, str], timeout_s: float = 300
) -> HttpServer:
    """Start a server with these settings (environment variables) and wait for /ready."""
    port = free_port()
    env = {**os.environ, "EMBEDGATE_LOG_LEVEL": "warning", "EMBEDGATE_DTYPE": dtype, **env_extra}
    if model:
        env["EMBEDGATE_MODEL"] = model
    server = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return HttpServer(port, server)
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise TimeoutError(f"the server on port {port} did not become ready")
        time.sleep(0.2)
