"""The `embedgate` command line (also `python -m embedgate`).

Options only override settings; every setting can also come from `EMBEDGATE_<NAME>` or the TOML
file. No option takes a secret (command lines show up in `ps`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from embedgate.config import DType, Settings

app = typer.Typer(
    name="embedgate",
    help="Private, self-hosted text embeddings with an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
)

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model directory or Hugging Face id.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", exists=True, dir_okay=False)
]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:
        typer.echo(f"embedgate: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model directory or Hugging Face id; repeat it to serve more models beside "
            "the first (rerankers: a cross-encoder or Qwen3-Reranker).",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory (default ./data).")] = None,
    config: ConfigOpt = None,
    dtype: Annotated[
        DType | None, typer.Option(help="float32, bfloat16 or auto (bf16 where native).")
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            help="Gateway mode: an OpenAI-compatible embedding server that runs the model "
            "(repeatable); --model then names its tokenizer directory.",
        ),
    ] = None,
) -> None:
    """Serve the OpenAI-compatible API (the main job)."""
    import uvicorn

    from embedgate import server_file
    from embedgate.api.header_timeout import protocol_with_header_timeout
    from embedgate.app import create_app
    from embedgate.logs import configure_logging

    settings = _settings(
        model=model[0] if model else None,
        models=model[1:] or None if model else None,
        host=host,
        port=port,
        data_dir=data_dir,
        config=config,
        dtype=dtype,
        upstreams=upstream or None,
    )
    configure_logging(settings.log_level, settings.log_format)
    # torch's compiler cache defaults to /tmp/torchinductor_<user>, made on import: keep it
    # under the data dir with the rest of the server's files (children inherit this)
    os.environ.setdefault(
        "TORCHINDUCTOR_CACHE_DIR", str(settings.data_dir.absolute() / "cache" / "torchinductor")
    )
    runs_torch = _check_model(settings)  # fail fast on a wrong --model before binding a port
    # The forward thread re-takes the GIL after every torch op; with the default 5 ms switch
    # interval a busy event loop stalls it (a GIL convoy). 1 ms measured faster under load.
    sys.setswitchinterval(0.001)
    _freeze_library_objects(
        torch=runs_torch, transformers=runs_torch and _model_in_this_process(settings)
    )
    if not settings.auth and settings.host not in LOOPBACK:
        typer.echo("embedgate: refusing auth=false on a non-loopback address", err=True)
        raise typer.Exit(2)
    tls = _tls_options(settings)
    from embedgate.errors import ServiceError
    from embedgate.security.secret_files import InsecureSecretFile
    from embedgate.services.security import preflight

    try:
        preflight(settings)
    except (InsecureSecretFile, OSError, ValueError, ServiceError) as exc:
        typer.echo(f"embedgate: {exc}", err=True)
        raise typer.Exit(2) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scheme = "https" if tls else "http"
    # a log line, not a bare print: with log_format = json every line on stderr is JSON
    logging.getLogger("embedgate.app").info(
        "serving", extra={"url": f"{scheme}://{settings.host}:{settings.port}"}
    )
    app = create_app(settings)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            server_file.forget(settings.data_dir)

    server = Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For is resolved by embedgate (trusted_proxies)
            ssl_certfile=tls.get("certfile"),
            ssl_keyfile=tls.get("keyfile"),
            http=protocol_with_header_timeout(settings.header_timeout_s),
        )
    )
    services = app.state.embedgate
    # a fault the server cannot recover from by itself (model restarts given up): shut down
    # gracefully and exit non-zero, so that systemd or Kubernetes restarts the process
    services.model.on_fatal = lambda _reason: setattr(server, "should_exit", True)
    local = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    server_file.record(settings.data_dir, f"{scheme}://{local}:{settings.port}")
    try:
        server.run()
    finally:  # on SIGTERM `Server.shutdown` removes it: uvicorn re-raises the signal after
        server_file.forget(settings.data_dir)
    if not server.started:  # as uvicorn.run: the port could not be bound, say
        raise typer.Exit(3)
    if services.model.fatal is not None:
        typer.echo(f"embedgate: exiting: {services.model.fatal}", err=True)
        raise typer.Exit(3)


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _check_model(settings: Settings) -> bool:
    """A model that cannot be found is a usage error: one line and a hint, exit 2. True when
    PyTorch serves the model (not a GGUF file, not gateway mode)."""
    from embedgate.engine.loading import resolve_model

    try:
        source = resolve_model(settings.model, settings.model_name, settings.model_aliases)
    except FileNotFoundError as exc:
        typer.echo(
            f"embedgate: {exc} (give --model a local model directory or .gguf file, or leave "
            "it out for the bundled all-MiniLM-L6-v2)",
            err=True,
        )
        raise typer.Exit(2) from None
    _check_extra_models(settings)
    if settings.upstreams:
        return False
    if source.path.suffix.lower() == ".gguf":
        _check_gguf(source.path)
        return False
    return True


def _check_extra_models(settings: Settings) -> None:
    """A model served beside the first that cannot be found, or a task its directory
    contradicts, is a usage error at start, not a model that never becomes ready."""
    from embedgate.engine.rerank_spec import read_rerank_spec

    for one in settings.model_entries():
        path = Path(one.path)
        problem = None
        if path.suffix.lower() == ".gguf":
            if one.task == "rerank":
                problem = "rerankers run on PyTorch: give a model directory, not a GGUF file"
            elif not path.is_file():
                problem = "no such GGUF file"
        elif not (path / "config.json").is_file():
            problem = "not a model directory (no config.json)"
        elif one.task == "rerank" and read_rerank_spec(path, name=one.name, told=True) is None:
            problem = (
                "task = rerank, but it is not a reranker (a *ForSequenceClassification "
                "cross-encoder, or a Qwen3 model)"
            )
        if problem is not None:
            typer.echo(f"embedgate: --model {one.path}: {problem}", err=True)
            raise typer.Exit(2)


def _model_in_this_process(settings: Settings) -> bool:
    """Whether the weights load here rather than in a model process (`factory.py` decides
    the same way; a GPU may only be known once torch is imported, so `auto` counts as no)."""
    return settings.model_process is False or (
        settings.model_process is None and settings.device == "cuda"
    )


def _check_gguf(path: Path) -> None:
    """A GGUF embedgate cannot serve, or a missing llama.cpp extra, is one line at start."""
    import importlib.util

    from embedgate.engine.backends.gguf.file import GGUF_EXTRA, read_gguf

    try:
        read_gguf(path)
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"embedgate: {exc}", err=True)
        raise typer.Exit(2) from None
    if importlib.util.find_spec("llama_cpp") is None:
        typer.echo(f"embedgate: GGUF models need the llama.cpp extra: {GGUF_EXTRA}", err=True)
        raise typer.Exit(2)


def _freeze_library_objects(*, torch: bool, transformers: bool) -> None:
    """Import the model libraries this process will use now and exempt their objects (and
    everything imported so far) from garbage collection.

    They live as long as the process (torch and transformers: ~440k objects); left in the
    collector's generations, every full collection scans them all again, ~4% of CPU under
    load (measured with perf). Gateway and GGUF servers never import torch at all.
    """
    import gc

    if torch:
        import torch as _torch  # noqa: F401
    if transformers:
        from transformers import AutoModel  # noqa: F401

    gc.collect()
    gc.freeze()


def _tls_options(settings: Settings) -> dict[str, str]:
    from embedgate.security.secret_files import InsecureSecretFile, read_secret_file

    if not settings.tls_certfile and not settings.tls_keyfile:
        return {}
    if not (settings.tls_certfile and settings.tls_keyfile):
        typer.echo("embedgate: TLS needs both tls_certfile and tls_keyfile", err=True)
        raise typer.Exit(2)
    try:
        read_secret_file(settings.tls_keyfile)
    except (InsecureSecretFile, OSError) as exc:
        typer.echo(f"embedgate: {exc}", err=True)
        raise typer.Exit(2) from None
    return {"certfile": str(settings.tls_certfile), "keyfile": str(settings.tls_keyfile)}


@app.command()
def embed(
    text: Annotated[str, typer.Argument(help="The text to embed.")],
    dimensions: Annotated[int | None, typer.Option(help="Matryoshka size.")] = None,
    query: Annotated[bool, typer.Option("--query", help="Embed as a query.")] = False,
    instruction: Annotated[str | None, typer.Option(help="Query task (Qwen3).")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Embed one text in-process (no server) and print JSON."""
    from embedgate.engine import EmbedRequest
    from embedgate.errors import ServiceError
    from embedgate.logs import configure_logging
    from embedgate.services import open_services_sync

    settings = _settings(model=model, config=config)
    configure_logging("warning", settings.log_format)
    _check_model(settings)
    request = EmbedRequest(
        [text],
        dimensions=dimensions,
        input_type="query" if query or instruction else None,
        instruction=instruction,
    )
    try:
        with open_services_sync(settings, knowledge=False, one_shot=True) as (services, _):
            engine = services.require_engine()
            result = engine.embed_sync(request)
    except ServiceError as exc:
        typer.echo(f"embedgate: {exc.message}", err=True)
        raise typer.Exit(1) from None
    vector = result.vectors[0]
    out = {
        "model": engine.name,
        "dimensions": len(vector),
        "tokens": result.prompt_tokens,
        "embedding": [float(x) for x in vector],
    }
    sys.stdout.write(json.dumps(out) + "\n")


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="A model directory or a .gguf file.")],
) -> None:
    """Print what embedgate will do with a model: family, pooling, EOS handling, dimensions,
    max tokens, precision or quantisation, size on disk (no weights are loaded)."""
    from embedgate.engine.inspection import describe_model

    try:
        description = describe_model(Path(model).expanduser())
    except (ValueError, RuntimeError, OSError) as exc:
        typer.echo(f"embedgate: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("\n".join(description.lines()))


def main() -> None:
    # everything embedgate writes (database, vector store, uploads, audit, keys) is for its
    # own user only: files 0600, directories 0700, whatever the caller's umask
    os.umask(0o077)
    from embedgate.cli_admin import audit_app, keys_app
    from embedgate.cli_kb import kb_app

    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.add_typer(kb_app, name="kb")
    app()
