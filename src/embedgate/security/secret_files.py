"""Secrets come from the environment or from files only the owner can read.

A secret file readable by group or others is refused with the command that fixes it; the pepper
is generated into the data directory (mode 0600) on first start.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class InsecureSecretFile(Exception):
    pass


def read_secret_file(path: Path) -> bytes:
    """The file's bytes (trailing newline removed), refusing group/other-readable files."""
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureSecretFile(
            f"{path} is readable by group or others (mode {stat.filemode(info.st_mode)}); "
            f"run: chmod 600 {path}"
        )
    data = path.read_bytes().rstrip(b"\r\n")
    if not data:
        raise InsecureSecretFile(f"{path} is empty")
    return data


def write_secret_file(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically (never world-readable, not even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_pepper(env_value: str | None, pepper_file: Path | None, data_dir: Path) -> bytes:
    """Env value, then the configured file, then <data_dir>/pepper (created on first start)."""
    if env_value:
        return env_value.encode()
    if pepper_file is not None:
        return read_secret_file(pepper_file)
    default = data_dir / "pepper"
    if default.exists():
        return read_secret_file(default)
    write_secret_file(default, secrets.token_hex(32).encode())
    return read_secret_file(default)
