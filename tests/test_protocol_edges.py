"""Edges below the routes: slow headers are dropped, and state is written owner-only."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from embedgate.api.header_timeout import protocol_with_header_timeout
from embedgate.app import create_app
from embedgate.config import Settings
from support.servers import fake_factory, wait_ready
from support.services import free_port


def test_a_client_that_sends_headers_slowly_is_dropped(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), fake_factory())
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, http=protocol_with_header_timeout(1.0)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(lambda p: httpx.get(f"http://127.0.0.1:{port}{p}", timeout=5))
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.settimeout(10)
            started = time.monotonic()
            closed = False
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50:
                try:
                    slow.sendall(bytes([byte]))
                    time.sleep(0.1)
                    if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            assert closed, "the slow client was never dropped"
            assert time.monotonic() - started < 4
        # a client that sends its request at once is unaffected, before and after the limit
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as fast:
            assert fast.get("/health").status_code == 200
            time.sleep(1.5)  # longer than the header limit, on the same keep-alive connection
            assert fast.get("/health").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_state_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = subprocess.run(
        [sys.executable, "-m", "embedgate", "keys", "create", "--name", "n", "--role", "reader"],
        env={**os.environ, "EMBEDGATE_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(data)} is {oct(mode)}"
    assert (data / "embedgate.db").is_file()
