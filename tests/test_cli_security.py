"""The security side of the command line: key lifecycle, no secret flags, private secret
files, TLS."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer

from embedgate import cli
from support.servers import wait_ready
from support.services import free_port

pytestmark = pytest.mark.slow  # starts real embedgate processes


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedgate", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_key_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    created = run(
        "keys",
        "create",
        "--name",
        "ci",
        "--role",
        "writer",
        "--collections",
        "a,b",
        "--expires-in",
        "30d",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--cidr",
        "10.0.0.0/8",
        "--data-dir",
        str(tmp_path),
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"egk_[a-z2-7]{12}_[0-9A-Za-z]{38}", key)
    key_id = key.split("_")[1]
    listing = run("keys", "list", "--data-dir", str(tmp_path))
    assert (
        key_id in listing.stdout and key not in listing.stdout and "…" + key[-4:] in listing.stdout
    )
    rotated = run("keys", "rotate", key_id, "--grace", "1h", "--data-dir", str(tmp_path))
    assert rotated.returncode == 0 and rotated.stdout.strip().splitlines()[-1].startswith("egk_")
    assert run("keys", "revoke", key_id, "--data-dir", str(tmp_path)).returncode == 0
    bad = run("keys", "create", "--name", "x", "--role", "root", "--data-dir", str(tmp_path))
    assert bad.returncode == 1 and "role must be one of" in bad.stderr
    verified = run("audit", "verify", "--data-dir", str(tmp_path))
    # create, rotate (one record naming the new key), revoke
    assert verified.returncode == 0 and "3 records" in verified.stdout


def test_no_command_line_option_takes_a_secret() -> None:
    from embedgate.cli_admin import audit_app, keys_app

    secretish = re.compile(r"secret|pepper|password|token|api.?key|redis|database|jwt", re.I)
    apps = [cli.app, keys_app, audit_app]
    offenders = []
    for app in apps:
        group = typer.main.get_group(app) if len(app.registered_commands) > 1 else None
        commands = group.commands.values() if group else [typer.main.get_command(app)]
        for command in commands:
            for param in command.params:
                if any(secretish.search(opt) for opt in getattr(param, "opts", [])):
                    offenders.append(f"{command.name} {param.opts}")
    assert offenders == []


def test_serve_refuses_a_world_readable_pepper(tmp_path: Path) -> None:
    pepper = tmp_path / "pepper"
    pepper.write_text("p" * 64)
    os.chmod(pepper, 0o644)
    env = {**os.environ, "EMBEDGATE_PEPPER_FILE": str(pepper), "EMBEDGATE_DATA_DIR": str(tmp_path)}
    result = run("keys", "list", env=env)
    assert result.returncode == 1 and f"chmod 600 {pepper}" in result.stderr
    assert "Traceback" not in result.stderr
    served = run("serve", "--port", str(free_port()), env=env)
    assert served.returncode == 2 and f"chmod 600 {pepper}" in served.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o644)
    return cert_path, key_path


def test_tls_from_files(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "EMBEDGATE_TLS_CERTFILE": str(cert),
        "EMBEDGATE_TLS_KEYFILE": str(key),
        "EMBEDGATE_DATA_DIR": str(tmp_path / "d"),
    }
    refused = run("serve", "--port", str(port), env=env)
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    os.chmod(key, 0o600)
    log = (tmp_path / "stderr.log").open("w")  # a pipe nobody reads fills and stalls the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        base = f"https://127.0.0.1:{port}"
        wait_ready(lambda p: httpx.get(base + p, verify=False, timeout=5), timeout=180)
        assert httpx.get(base + "/health", verify=False).json() == {"status": "ok"}
        admin = (tmp_path / "d" / "admin.key").read_text().strip()
        response = httpx.post(
            base + "/v1/embeddings",
            json={"input": "tls"},
            verify=False,
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
