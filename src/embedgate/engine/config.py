"""`EngineConfig`: everything the engine needs to know, and nothing about the server.

The server's `Settings` is translated into this record by the composition root
(`embedgate.services`), so the engine can be built and tested on its own: a test or a
benchmark writes `EngineConfig(model=..., forward_threads=1)` and never touches the server's
settings, files or environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def base_url(url: str) -> str:
    """The upstream's root, however it was written: `http://h:8001`, `http://h:8001/` and
    the OpenAI-style `http://h:8001/v1` all name the same server."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")].rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"an upstream URL starts with http:// or https://, got {url!r}")
    return root


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream embedding server of gateway mode."""

    url: str  # the server's root or its /v1 base; requests go to {root}/v1/embeddings
    model: str | None  # the model name the upstream expects; None: the served model's name
    api_key: str | None = field(default=None, repr=False)
    max_batch: int = 64
    max_concurrency: int = 8
    weight: float = 1.0
    timeout_s: float = 30.0
    # what it speaks: "openai" (/v1/embeddings), "cohere" (/v1/rerank), "tei" (/rerank)
    api: str = "openai"

    @property
    def name(self) -> str:
        return base_url(self.url)


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Which model, on what hardware, and the batching and admission limits around it.

    `None` means "choose for this machine" (see `factory.thread_plan` and `factory.load_engine`).
    """

    # the model
    model: str | None = None  # local directory or hub id; None = the bundled MiniLM
    model_name: str | None = None
    model_aliases: tuple[str, ...] = ()
    task: str | None = None  # "embed" | "rerank"; None: read from the model directory
    # gateway mode: the model runs on these servers; `model` then only gives its tokenizer
    upstreams: tuple[UpstreamConfig, ...] = ()
    upstream_deadline_s: float = 60.0  # one forward pass, retries on other upstreams included
    upstream_health_interval_s: float = 5.0  # every upstream is probed this often
    # the hardware
    dtype: str = "float32"
    device: str = "auto"
    onednn: bool = True
    model_process: bool | None = None
    model_restart_failures_before_exit: int | None = None  # None: restarts never give up
    forward_threads: int | None = None
    torch_threads: int | None = None
    # text and passes
    max_input_tokens: int | None = None
    pad_to_multiple_of: int = 16
    max_batch_tokens: int | None = None
    batch_wait_ms: float = 20.0
    tokenizer_threads: int = 1
    gguf_group_tokens: int | None = None  # tokens per llama.cpp decode; None = measured default
    # short passes of encoder models on ONNX Runtime ("auto": where onnxruntime is installed)
    small_pass_runtime: str = "auto"  # "auto" | "onnx" | "off"
    cache_dir: str | None = None  # where exported graphs are kept (the data dir's cache/)
    # admission
    max_inputs_per_request: int = 2048
    max_request_tokens: int = 1_048_576
    max_queued_tokens: int = 1_048_576
    max_queue_seconds: float | None = 30.0
