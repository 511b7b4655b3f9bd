"""Where the embedded Milvus Lite server writes its own logs.

Milvus Lite runs a C++ server as a subprocess, and that server logs through glog, whose
default directory is /tmp: two files per start, hundreds after a day of restarts, left behind
on a shared machine. `logs_beside(db_file)` points glog at `<db dir>/milvus-logs/` (warnings
and errors only) while the subprocess starts, and keeps the newest few files there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEEP_LOG_FILES = 20
_env_lock = threading.Lock()  # the subprocess inherits os.environ: one start at a time


def is_embedded(uri: str) -> bool:
    """A file path (Milvus Lite), not a server's address."""
    return not uri.startswith(("http://", "https://", "tcp://", "unix:", "grpc://"))


@contextmanager
def logs_beside(db_file: str) -> Iterator[None]:
    """Start Milvus Lite's server inside this block: its glog files land beside its file."""
    log_dir = Path(db_file).absolute().parent / "milvus-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    _prune(log_dir)
    wanted = {"GLOG_log_dir": str(log_dir), "GLOG_minloglevel": "1"}
    with _env_lock:
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _prune(log_dir: Path) -> None:
    """Keep the newest KEEP_LOG_FILES log files (and the links glog points at them)."""
    files = sorted(
        (p for p in log_dir.iterdir() if p.is_file() and not p.is_symlink()),
        key=lambda p: p.stat().st_mtime,
    )
    for old in files[:-KEEP_LOG_FILES]:
        old.unlink(missing_ok=True)
    for link in log_dir.iterdir():
        if link.is_symlink() and not link.exists():
            link.unlink(missing_ok=True)
