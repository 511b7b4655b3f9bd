"""`load_engine(config)`: the one place a model backend is chosen and loaded.

A new backend (an upstream gateway, llama.cpp) is a new branch here, selected by
`EngineConfig`; everything above the engine sees only `EmbeddingEngine`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedgate.engine.backend import Backend, PairBackend, TextOptions, WeightOptions
from embedgate.engine.config import EngineConfig
from embedgate.engine.engine import EmbeddingEngine
from embedgate.engine.loading import resolve_model
from embedgate.engine.rerank_spec import read_rerank_spec
from embedgate.engine.reranking import RerankEngine
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.submission import EngineLimits

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from embedgate.engine.backends.torch.model_process import RestartPolicy


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_plan(config: EngineConfig, *, on_gpu: bool, cores: int) -> tuple[int, int | None]:
    """(forward threads, torch intra-op threads or None for torch's default).

    A CPU gets two forward threads splitting the cores (measured faster under concurrent
    load than one thread with all of them, docs/benchmarks.md), in the model process or in
    this one; a GPU runs one pass at a time, so one thread feeds it.
    """
    forward = config.forward_threads or (1 if on_gpu or cores < 2 else 2)
    if config.torch_threads:
        return forward, config.torch_threads
    return forward, (None if on_gpu else max(1, cores // forward))


def load_engine(
    config: EngineConfig,
    observer: SchedulerObserver | None = None,
    *,
    one_shot: bool = False,
) -> EmbeddingEngine:
    """Load the configured model (slow: reads weights); the engine is not started yet.

    `one_shot` callers (the CLI's `embed`) keep the model in this process: a second process
    would only add start-up time."""
    source = resolve_model(config.model, config.model_name, list(config.model_aliases))
    if config.upstreams:
        return _gateway(config, source.path, source.name, source.aliases, observer)
    if source.path.suffix.lower() == ".gguf":
        return _gguf(config, source.path, source.name, source.aliases, observer)
    plan = _torch_plan(config, one_shot=one_shot)
    text = TextOptions(config.max_input_tokens, config.pad_to_multiple_of)
    backend: Backend
    if plan.model_process:
        from embedgate.engine.backends.torch.process_backend import ProcessBackend

        backend = ProcessBackend.load(
            source.path,
            plan.weights,
            text,
            plan.torch_threads,
            plan.forward_threads,
            plan.restart_policy(),
        )
    else:
        from embedgate.engine.backends.torch.backend import TorchBackend

        plan.use_torch_threads()
        backend = TorchBackend.load(source.path, plan.weights, text)
    backend = _with_small_passes(config, source.path, backend)
    return EmbeddingEngine(backend, source.name, source.aliases, plan.limits(config), observer)


def _with_small_passes(config: EngineConfig, model_dir: Path, backend: Backend) -> Backend:
    """An encoder on a CPU gets the small-pass runtime (`backends/onnx/small_pass.py`) when
    it is on: its graph is exported from the served weights once (in a child process, ~10 s)
    and cached in the data dir. Anything that stops it leaves the PyTorch backend serving
    every pass, with a warning: a missing speed-up never stops the server."""
    from embedgate.engine.backends.hf_tokenizer import TokenizedBackend

    wanted = config.small_pass_runtime
    if wanted == "off" or config.cache_dir is None or not isinstance(backend, TokenizedBackend):
        return backend
    if backend.spec.pooling == "last" or backend.describe().device != "cpu":
        return backend  # decoder models (Qwen3) and GPUs: measured separately, not here
    if importlib.util.find_spec("onnxruntime") is None:
        if wanted == "onnx":
            log.warning("small_pass_runtime = onnx, but onnxruntime is not installed")
        return backend
    from embedgate.engine.backends.onnx.small_pass import OnnxEncoder, SmallPassBackend

    target = Path(config.cache_dir) / "onnx" / f"{_weights_key(model_dir, backend)}.onnx"
    try:
        if not target.is_file():
            log.info("exporting the model for short passes", extra={"to": str(target)})
            _export(model_dir, backend.spec.pooling, target)
        encoder = OnnxEncoder(target)
    except Exception as exc:  # an export or a runtime that fails: serve without it
        detail = getattr(exc, "stderr", b"") or b""
        log.warning(
            "short passes stay on PyTorch: the ONNX export or session failed",
            extra={"reason": f"{exc} {detail.decode(errors='replace')[-500:]}"},
        )
        return backend
    return SmallPassBackend(backend, encoder)


def _export(model_dir: Path, pooling: str, target: Path) -> None:
    """The export in a child process (torch's exporter and its compiler caches are freed
    with it), its scratch files under the cache, never the shared temp dir. Servers that
    start together on one data dir take turns: the second finds the first one's graph."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        if not target.is_file():
            _export_now(model_dir, pooling, target)


def _export_now(model_dir: Path, pooling: str, target: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        subprocess.run(  # noqa: S603 - our own module, paths we chose
            [sys.executable, "-m", "embedgate.engine.backends.torch.onnx_export",
             str(model_dir), pooling, str(target)],
            check=True, timeout=900, capture_output=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _weights_key(model_dir: Path, backend: Backend) -> str:
    """Names an export: the model's config, its weight files (name, size, mtime) and the
    pooling, so new weights in the same directory never reuse an old graph."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.suffix in (".json", ".safetensors", ".bin") and path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    digest.update(backend.spec.pooling.encode())
    return f"{model_dir.name}-{digest.hexdigest()[:16]}"


def load_reranker(
    config: EngineConfig,
    observer: SchedulerObserver | None = None,
    *,
    one_shot: bool = False,
) -> RerankEngine:
    """Load the configured reranker (a cross-encoder or Qwen3-Reranker) on PyTorch, in a model
    process or in this one as for embedding models; the engine is not started yet."""
    source = resolve_model(config.model, config.model_name, list(config.model_aliases))
    if source.path.suffix.lower() == ".gguf":
        raise ValueError("rerankers run on PyTorch or an upstream server: no GGUF reranker")
    spec = read_rerank_spec(
        source.path, name=config.model or source.name, told=config.task == "rerank"
    )
    if spec is None:
        raise ValueError(
            f"{source.path} is not a reranker: neither a *ForSequenceClassification "
            "cross-encoder nor a Qwen3 model whose name says Reranker"
        )
    if config.upstreams:
        from embedgate.engine.backends.gateway.rerank_backend import GatewayPairBackend

        upstreams = [dataclasses.replace(u, model=u.model or source.name) for u in config.upstreams]
        gateway = GatewayPairBackend.load(
            source.path,
            spec,
            upstreams,
            deadline_s=config.upstream_deadline_s,
            health_interval_s=config.upstream_health_interval_s,
        )
        in_flight = sum(max(1, u.max_concurrency) for u in config.upstreams)
        limits = _limits(config, max_batch_tokens=16384, forward_threads=max(2, in_flight))
        return RerankEngine(gateway, source.name, source.aliases, limits, observer)
    plan = _torch_plan(config, one_shot=one_shot)
    backend: PairBackend
    if plan.model_process:
        from embedgate.engine.backends.torch.rerank_backend import ProcessPairBackend

        backend = ProcessPairBackend.load(
            source.path,
            spec,
            plan.weights,
            threads=plan.torch_threads,
            workers=plan.forward_threads,
            policy=plan.restart_policy(),
        )
    else:
        from embedgate.engine.backends.torch.rerank_backend import TorchPairBackend

        plan.use_torch_threads()
        backend = TorchPairBackend.load(source.path, spec, plan.weights)
    return RerankEngine(backend, source.name, source.aliases, plan.limits(config), observer)


@dataclass(frozen=True)
class _TorchPlan:
    """Where and how a PyTorch model runs: in a model process (the CPU default) or on this
    process's threads (GPU, one-shot CLI), with which threads and weights."""

    on_gpu: bool
    model_process: bool
    forward_threads: int
    torch_threads: int | None
    weights: WeightOptions
    max_restart_failures: int | None

    def restart_policy(self) -> RestartPolicy:
        from embedgate.engine.backends.torch.model_process import RestartPolicy

        return RestartPolicy(max_failures=self.max_restart_failures)

    def use_torch_threads(self) -> None:
        """In-process models run on this process's torch threads."""
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)

    def limits(self, config: EngineConfig) -> EngineLimits:
        # small batches keep a CPU's caches warm; GPUs need large ones to be busy
        return _limits(
            config,
            max_batch_tokens=16384 if self.on_gpu else 4096,
            forward_threads=self.forward_threads,
        )


def _torch_plan(config: EngineConfig, *, one_shot: bool) -> _TorchPlan:
    on_gpu = config.device == "cuda" or (config.device == "auto" and _cuda_available())
    model_process = config.model_process
    if model_process is None:
        model_process = not on_gpu and not one_shot
    forward_threads, torch_threads = thread_plan(config, on_gpu=on_gpu, cores=available_cores())
    return _TorchPlan(
        on_gpu=on_gpu,
        model_process=model_process,
        forward_threads=forward_threads,
        torch_threads=torch_threads,
        weights=WeightOptions(
            resolve_dtype(config.dtype, on_gpu=on_gpu), config.device, config.onednn
        ),
        max_restart_failures=config.model_restart_failures_before_exit,
    )


def resolve_dtype(dtype: str, *, on_gpu: bool) -> str:
    """`auto`: bfloat16 on a GPU and on a CPU that computes it natively (AMX or AVX-512 BF16:
    3-4x fp32 there, cosine >= 0.9999 to fp32 in the parity tests); float32 elsewhere, where
    torch would emulate bf16 far slower than fp32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu or cpu_has_native_bf16() else "float32"


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = info.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _limits(config: EngineConfig, *, max_batch_tokens: int, forward_threads: int) -> EngineLimits:
    return EngineLimits(
        max_inputs=config.max_inputs_per_request,
        max_request_tokens=config.max_request_tokens,
        max_batch_tokens=config.max_batch_tokens or max_batch_tokens,
        max_queued_tokens=config.max_queued_tokens,
        tokenizer_threads=config.tokenizer_threads,
        batch_wait_ms=config.batch_wait_ms,
        forward_threads=forward_threads,
        max_queue_seconds=config.max_queue_seconds,
    )


def _gateway(
    config: EngineConfig,
    model_dir: Path,
    name: str,
    aliases: Sequence[str],
    observer: SchedulerObserver | None,
) -> EmbeddingEngine:
    """Gateway mode: the model's tokenizer and rules here, its forward passes upstream. As
    many passes in flight as the upstreams take at once, each about one upstream batch."""
    from embedgate.engine.backends.gateway.backend import GatewayBackend

    text = TextOptions(config.max_input_tokens, pad_to_multiple_of=1)
    upstreams = [dataclasses.replace(u, model=u.model or name) for u in config.upstreams]
    backend = GatewayBackend.load(
        model_dir,
        text,
        upstreams,
        deadline_s=config.upstream_deadline_s,
        health_interval_s=config.upstream_health_interval_s,
    )
    in_flight = sum(max(1, u.max_concurrency) for u in config.upstreams)
    limits = _limits(config, max_batch_tokens=16384, forward_threads=max(2, in_flight))
    return EmbeddingEngine(backend, name, aliases, limits, observer)


def _gguf(
    config: EngineConfig,
    path: Path,
    name: str,
    aliases: Sequence[str],
    observer: SchedulerObserver | None,
) -> EmbeddingEngine:
    """llama.cpp runs one decode at a time on all the cores it is given: one forward thread,
    passes cut into decodes inside the backend."""
    from embedgate.engine.backends.gguf.backend import GGUFBackend

    text = TextOptions(config.max_input_tokens, pad_to_multiple_of=1)
    backend = GGUFBackend.load(
        path, text, cores=available_cores(), group_tokens=config.gguf_group_tokens
    )
    limits = _limits(config, max_batch_tokens=4096, forward_threads=1)
    return EmbeddingEngine(backend, name, aliases, limits, observer)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
