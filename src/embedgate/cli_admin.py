"""`embedgate keys ...` and `embedgate audit verify`: key lifecycle and the audit chain,
working directly on the configured database and audit file (no server needed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from embedgate.config import Settings

if TYPE_CHECKING:
    from embedgate.security.key_service import KeyService

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Check the audit log.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", exists=True, dir_okay=False)
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="State directory.")]


@contextmanager
def _service(config: Path | None, data_dir: Path | None) -> Iterator[KeyService]:
    """The key service from the one assembly: no model, no vector store (a server may hold
    the data dir's Milvus Lite file)."""
    from embedgate.logs import configure_logging
    from embedgate.security.secret_files import InsecureSecretFile
    from embedgate.services import open_services_sync

    overrides = {k: v for k, v in {"config": config, "data_dir": data_dir}.items() if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging("warning", "text")
    with ExitStack() as stack:
        try:
            services, _ = stack.enter_context(
                open_services_sync(settings, model="none", knowledge=False)
            )
        except (InsecureSecretFile, OSError, ValueError) as exc:
            raise _fail(exc) from None
        assert services.keys is not None
        yield services.keys


def _fail(exc: Exception) -> typer.Exit:
    from embedgate.errors import ServiceError

    message = exc.message if isinstance(exc, ServiceError) else str(exc)
    typer.echo(f"embedgate: {message}", err=True)
    return typer.Exit(1)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    role: Annotated[str, typer.Option(help="reader, writer, admin or monitor (/metrics only).")],
    collections: Annotated[str | None, typer.Option(help="Limit to collections a,b.")] = None,
    models: Annotated[str | None, typer.Option(help="Limit to served models a,b.")] = None,
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Input tokens per minute.")] = None,
    cidr: Annotated[list[str] | None, typer.Option(help="Allowed client network (repeat).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key and print it once, alone on the last line."""
    from embedgate.security.key_service import parse_duration

    try:
        with _service(config, data_dir) as service:
            issued = service.create(
                name,
                role,
                actor="cli",
                collections=[c for c in collections.split(",") if c] if collections else None,
                models=[m for m in models.split(",") if m] if models else None,
                expires_in=parse_duration(expires_in) if expires_in else None,
                rpm=rpm,
                tpm=tpm,
                cidrs=list(cidr or []),
            )
    except Exception as exc:
        raise _fail(exc) from None
    record = issued.record
    typer.echo(f"created key {record.id} ({record.name}, role {record.role}); store it now:")
    typer.echo(issued.key)


@keys_app.command("list")
def list_keys(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """All keys, redacted (prefix and last four characters only)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "id", "name", "role", "key", "collections", "models", "expires", "active", "last used"
    )
    with _service(config, data_dir) as service:
        entries = service.list()
    for entry in entries:
        table.add_row(
            entry["id"],
            entry["name"],
            entry["role"],
            entry["key"],
            ",".join(entry["collections"]) if entry["collections"] is not None else "*",
            ",".join(entry["models"]) if entry["models"] is not None else "*",
            entry["expires_at"] or "-",
            "yes" if entry["active"] else "no",
            entry["last_used_at"] or "-",
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def revoke(key_id: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke a key at once."""
    try:
        with _service(config, data_dir) as service:
            service.revoke(key_id, actor="cli")
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(f"revoked {key_id}")


@keys_app.command("rotate")
def rotate(
    key_id: str,
    grace: Annotated[str, typer.Option(help="How long the old key keeps working.")] = "0s",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Issue a replacement key; the old one stops working after the grace period."""
    from embedgate.security.key_service import parse_duration

    try:
        with _service(config, data_dir) as service:
            issued = service.rotate(key_id, "cli", parse_duration(grace))
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(f"rotated {key_id} -> {issued.record.id}; old key valid for {grace}; new key:")
    typer.echo(issued.key)


def _checkpoint(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter("a checkpoint is SEQ:HASH, as `embedgate audit checkpoint` prints")
    return int(seq), digest


def _audit_target(path: Path | None, settings: Settings) -> Path:
    target = path or settings.audit_path or settings.data_dir / "audit.jsonl"
    if not target.is_file():
        typer.echo(f"embedgate: no audit log at {target}", err=True)
        raise typer.Exit(2)
    return target


@audit_app.command("verify")
def verify(
    path: Annotated[Path | None, typer.Option(help="Audit file (default from settings).")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="SEQ:HASH from `audit checkpoint`: finds a cut-off tail.")
    ] = None,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="Accept unkeyed records (a pre-key file).")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Check the keyed hash chain (needs the server's pepper); exit 1 and name the first bad
    line on tampering."""
    from embedgate.security.audit import verify_chain
    from embedgate.services.security import audit_chain_key

    overrides = {k: v for k, v in {"config": config, "data_dir": data_dir}.items() if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    mark = _checkpoint(checkpoint) if checkpoint else None
    target = _audit_target(path, settings)
    try:
        key = audit_chain_key(settings)
    except (ValueError, OSError) as exc:
        typer.echo(f"embedgate: {exc}", err=True)
        raise typer.Exit(2) from None
    with target.open(encoding="utf-8") as handle:
        lines = (line.rstrip("\n") for line in handle)
        result = verify_chain(lines, key, legacy=legacy, checkpoint=mark)
    if not result.ok:
        typer.echo(f"audit chain BROKEN at line {result.bad_line}: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {result.records} records")


@audit_app.command("checkpoint")
def checkpoint(
    path: Annotated[Path | None, typer.Option(help="Audit file (default from settings).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print SEQ:HASH of the last record; keep it elsewhere and pass it to `audit verify
    --checkpoint` later to prove no record after it was cut off."""
    import json

    overrides = {k: v for k, v in {"config": config, "data_dir": data_dir}.items() if v}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    target = _audit_target(path, settings)
    last = target.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    record = json.loads(last)
    typer.echo(f"{record['seq']}:{record['hash']}")
