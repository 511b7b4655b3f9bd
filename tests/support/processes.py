"""`embedgate serve` as a real subprocess on a free loopback port, for tests of signals,
crashes and restarts. Its stderr goes to a file beside the data dir (a pipe nobody reads
could fill and stall the server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.servers import wait_ready
from support.services import free_port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    data_dir: Path
    stderr: Path

    @property
    def admin(self) -> dict[str, str]:
        """The bootstrap admin key's header (the server wrote it on first start)."""
        return {"Authorization": f"Bearer {(self.data_dir / 'admin.key').read_text().strip()}"}


def start_serve(data_dir: Path, *args: str, port: int | None = None, **env: str) -> Served:
    """Start it (not waiting); `env` adds EMBEDGATE_* settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    stderr = data_dir.parent / f"{data_dir.name}.stderr"
    with stderr.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "embedgate", "serve", "--port", str(port), *args],
            env={
                **os.environ,
                "EMBEDGATE_DATA_DIR": str(data_dir),
                "EMBEDGATE_LOG_LEVEL": "warning",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    return Served(process, f"http://127.0.0.1:{port}", data_dir, stderr)


def wait_served(served: Served, timeout: float = 180) -> None:
    wait_ready(lambda p: httpx.get(served.base + p, timeout=5), timeout=timeout)


def stop(served: Served, sig: int = signal.SIGTERM) -> None:
    if served.process.poll() is None:
        served.process.send_signal(sig)
        try:
            served.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@contextmanager
def serving(data_dir: Path, *args: str, port: int | None = None, **env: str) -> Iterator[Served]:
    """A ready server, stopped (SIGTERM, then SIGKILL) when the block ends."""
    served = start_serve(data_dir, *args, port=port, **env)
    try:
        wait_served(served)
        yield served
    finally:
        stop(served)
