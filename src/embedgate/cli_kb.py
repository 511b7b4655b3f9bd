"""`embedgate kb create|ingest|search|reindex`: against a running server (`--server URL`, key from
`EMBEDGATE_API_KEY` or `<data-dir>/admin.key`, never a flag) or in-process on the local data
dir (the server must not be running on the same data dir then)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from embedgate.config import Settings

kb_app = typer.Typer(
    help="Knowledge bases: create, ingest files, search, reindex.", no_args_is_help=True
)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="URL of a running embedgate (default: in-process).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="State directory.")]


class Backend(Protocol):
    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def upload(self, name: str, path: Path) -> dict[str, Any]: ...

    def job(self, job_id: str) -> Mapping[str, Any]: ...

    def document(self, name: str, doc_id: str) -> Mapping[str, Any]: ...

    def search(self, name: str, body: dict[str, Any]) -> list[dict[str, Any]]: ...

    def reindex(self, name: str, body: dict[str, Any]) -> Mapping[str, Any]: ...

    def close(self) -> None: ...


class HttpBackend:
    def __init__(self, url: str, settings: Settings) -> None:
        import httpx

        key = os.environ.get("EMBEDGATE_API_KEY")
        key_file = settings.data_dir / "admin.key"
        if not key and key_file.is_file():
            key = key_file.read_text().strip()
        if not key:
            raise typer.BadParameter("set EMBEDGATE_API_KEY (or run where <data-dir>/admin.key is)")
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=300
        )

    def _check(self, response: Any) -> Any:
        if response.status_code >= 400:
            message = response.json().get("error", {}).get("message", response.text)
            raise RuntimeError(f"{response.status_code}: {message}")
        return response.json()

    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._check(self.http.post("/v1/collections", json={"name": name, **body})))

    def upload(self, name: str, path: Path) -> dict[str, Any]:
        with path.open("rb") as handle:
            files = {"file": (path.name, handle)}
            return dict(
                self._check(self.http.post(f"/v1/collections/{name}/documents", files=files))
            )

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._check(self.http.get(f"/v1/jobs/{job_id}")))

    def document(self, name: str, doc_id: str) -> dict[str, Any]:
        documents = self._check(self.http.get(f"/v1/collections/{name}/documents"))["data"]
        return next(d for d in documents if d["id"] == doc_id)

    def search(self, name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        return list(
            self._check(self.http.post(f"/v1/collections/{name}/search", json=body))["data"]
        )

    def reindex(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._check(self.http.post(f"/v1/collections/{name}/reindex", json=body)))

    def close(self) -> None:
        self.http.close()


class LocalBackend:
    """The knowledge base in this process, from the one assembly, acting as a local
    administrator."""

    def __init__(self, settings: Settings) -> None:
        from embedgate.identity import Principal, Role
        from embedgate.services import open_services_sync

        self._stack = ExitStack()
        services, self._loop = self._stack.enter_context(open_services_sync(settings))
        try:
            self.kb = services.require_knowledge()
            self.services = services
        except BaseException:
            self._stack.close()
            raise
        self.me = Principal(subject="cli", role=Role.ADMIN)

    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.kb.create_collection(self.me, name, **body)

    def upload(self, name: str, path: Path) -> dict[str, Any]:
        return self.kb.upload(self.me, name, path.name, path.read_bytes())

    def job(self, job_id: str) -> Mapping[str, Any]:
        return self.kb.job(self.me, job_id)

    def document(self, name: str, doc_id: str) -> Mapping[str, Any]:
        return self.kb.document(self.me, name, doc_id)

    def search(self, name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        options = body.pop("rerank", None)
        if options is not None:
            body["reranker"] = self.services.require_reranker_for(options.get("model"))
        return self._loop.run(self.kb.search(self.me, name, **body)).hits

    def reindex(self, name: str, body: dict[str, Any]) -> Mapping[str, Any]:
        return self.kb.start_reindex(self.me, name, body.get("model"))

    def close(self) -> None:
        self._stack.close()


def _backend(server: str | None, data_dir: Path | None) -> Backend:
    """The server given, the server that holds the data dir, or the data dir in-process;
    which one is said on stderr. Failing to open it is one line and a hint."""
    from embedgate.logs import configure_logging
    from embedgate.server_file import running_server

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))  # type: ignore[arg-type]
    configure_logging("warning", "text")
    where = settings.data_dir.resolve()
    if server is None and (server := running_server(settings.data_dir)) is not None:
        typer.echo(f"embedgate: using the server at {server}, which holds {where}", err=True)
    if server is not None:
        return HttpBackend(server, settings)
    typer.echo(f"embedgate: working in-process on the data dir {where}", err=True)
    try:
        return LocalBackend(settings)
    except Exception as exc:
        raise typer.Exit(_report(exc, where)) from None


def _report(exc: Exception, where: Path) -> int:
    from embedgate.errors import ServiceError

    message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
    typer.echo(
        f"embedgate: cannot open the data dir {where}: {message} (if a server uses it, pass "
        "--server URL; otherwise check --data-dir)",
        err=True,
    )
    return 1


def _fail(exc: Exception) -> typer.Exit:
    from embedgate.errors import ServiceError

    typer.echo(f"embedgate: {exc.message if isinstance(exc, ServiceError) else exc}", err=True)
    return typer.Exit(1)


@kb_app.command("create")
def create(
    name: str,
    description: Annotated[str, typer.Option(help="What the collection holds.")] = "",
    chunk_tokens: Annotated[int | None, typer.Option(help="Chunk size in tokens.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap in tokens.")] = None,
    dimensions: Annotated[int | None, typer.Option(help="Stored dimensions (Qwen3 MRL).")] = None,
    model: Annotated[
        str | None, typer.Option(help="A served embedding model (default: the server's first).")
    ] = None,
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a collection; its documents and queries are embedded with its model."""
    backend = _backend(server, data_dir)
    body = {
        "model": model,
        "description": description,
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "dimensions": dimensions,
    }
    try:
        created = backend.create(name, {k: v for k, v in body.items() if v is not None})
    except Exception as exc:
        raise _fail(exc) from None
    finally:
        backend.close()
    typer.echo(json.dumps(created, indent=2, default=str))


@kb_app.command("ingest")
def ingest(
    name: str,
    paths: Annotated[list[Path], typer.Argument(help="Files or directories.", exists=True)],
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Upload files and wait for them to be indexed, with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    files = sorted(
        p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()
    )
    backend = _backend(server, data_dir)
    chunks = tokens = failed = 0
    started = time.monotonic()
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} files"),
        TextColumn("{task.fields[chunks]} chunks"),
        TextColumn("{task.fields[rate]} tokens/s"),
        TimeElapsedColumn(),
    ]
    try:
        with Progress(*columns) as progress:
            task = progress.add_task(f"ingest into {name}", total=len(files), chunks=0, rate=0)
            for path in files:
                try:
                    accepted = backend.upload(name, path)
                    job = accepted["job"]
                    while job["status"] not in ("succeeded", "failed"):
                        time.sleep(0.2)
                        job = backend.job(job["id"])
                        progress.update(
                            task, description=f"{path.name}: {job['stage']} {job['progress']:.0%}"
                        )
                    document = backend.document(name, accepted["document"]["id"])
                    if job["status"] == "failed":
                        failed += 1
                        progress.console.print(f"[red]{path}: {job['error']}[/red]")
                    chunks += int(document.get("chunks") or 0)
                    tokens += int(document.get("tokens") or 0)
                except Exception as exc:
                    failed += 1
                    progress.console.print(f"[red]{path}: {getattr(exc, 'message', exc)}[/red]")
                rate = int(tokens / max(time.monotonic() - started, 1e-6))
                progress.update(task, advance=1, chunks=chunks, rate=rate)
    finally:
        backend.close()
    typer.echo(
        f"{len(files) - failed} of {len(files)} files indexed, {chunks} chunks, {tokens} tokens"
    )
    if failed:
        raise typer.Exit(1)


@kb_app.command("search")
def search(
    name: str,
    query: str,
    mode: Annotated[str, typer.Option(help="hybrid, dense or lexical.")] = "hybrid",
    top_k: Annotated[int, typer.Option("--top-k", help="How many results.")] = 5,
    rerank: Annotated[
        str | None,
        typer.Option("--rerank", help="Rescore the best candidates with this served reranker."),
    ] = None,
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search a collection and print the hits as JSON lines."""
    if mode not in ("hybrid", "dense", "lexical"):
        raise typer.BadParameter("mode must be hybrid, dense or lexical")
    backend = _backend(server, data_dir)
    try:
        body: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode}
        if rerank is not None:
            body["rerank"] = {"model": rerank}
        hits = backend.search(name, body)
    except Exception as exc:
        raise _fail(exc) from None
    finally:
        backend.close()
    for hit in hits:
        typer.echo(json.dumps(hit, ensure_ascii=False))


@kb_app.command("reindex")
def reindex(
    name: str,
    model: Annotated[
        str | None,
        typer.Option(
            help="Move the collection to this served embedding model (default: its own "
            "model when served, else the server's first)."
        ),
    ] = None,
    server: ServerOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-embed every chunk into a new index generation (with --model, with a new model)
    and the current schema; searches keep using the old generation and its model until the
    switch, then the new one. Also upgrades collections made by an earlier embedgate."""
    backend = _backend(server, data_dir)
    try:
        job = backend.reindex(name, {"model": model} if model else {})
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.5)
            job = backend.job(job["id"])
            typer.echo(f"{name}: {job['stage']}", err=True)
    except Exception as exc:
        raise _fail(exc) from None
    finally:
        backend.close()
    if job["status"] != "succeeded":
        typer.echo(f"embedgate: reindex of {name} {job['status']}: {job['error']}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name}: {job['stage']}")
