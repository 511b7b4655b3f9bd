"""`<data-dir>/server.json`: which running server holds a data dir.

`embedgate serve` writes it at start and removes it at exit; in-process CLI commands read it
and talk to that server instead of opening the same files (Milvus Lite allows one process
per file, and a second writer would fight the first).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

NAME = "server.json"


def record(data_dir: Path, url: str) -> Path:
    path = data_dir / NAME
    tmp = path.with_name(NAME + ".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def forget(data_dir: Path) -> None:
    """Remove the record, if it is this process's own."""
    if find_record(data_dir) == os.getpid():
        (data_dir / NAME).unlink(missing_ok=True)


def find_record(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / NAME).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_server(data_dir: Path) -> str | None:
    """The URL of the server that holds `data_dir`, when its process is alive."""
    try:
        recorded = json.loads((data_dir / NAME).read_text())
        pid, url = int(recorded["pid"]), str(recorded["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        with contextlib.suppress(OSError):  # a server killed -9 left it behind
            (data_dir / NAME).unlink()
        return None
    except PermissionError:
        pass  # alive, another user's
    return url
