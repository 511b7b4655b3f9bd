"""`load_engine(config)`: the one place a model backend is chosen and loaded.

A new backend (an upstream gateway, llama.cpp) is a new branch here, selected by
`EngineConfig`; everything above the engine sees only `EmbeddingEngine`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.backend import Backend, PairBackend, TextOptions, WeightOptions
from embedgate.engine.config import EngineConfig
from embedgate.engine.engine import EmbeddingEngine, EngineLimits
from embedgate.engine.loading import resolve_model
from embedgate.engine.rerank_spec import read_rerank_spec
from embedgate.engine.reranking import RerankEngine
from embedgate.engine.scheduler import SchedulerObserver


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
    wants_gpu = config.device == "cuda" or (config.device == "auto" and _cuda_available())
    use_process = config.model_process
    if use_process is None:
        use_process = not wants_gpu and not one_shot
    forward_threads, torch_threads = thread_plan(config, on_gpu=wants_gpu, cores=available_cores())
    weights = WeightOptions(config.dtype, config.device, config.onednn)
    text = TextOptions(config.max_input_tokens, config.pad_to_multiple_of)
    backend: Backend
    if use_process:
        from embedgate.engine.backends.torch.model_process import RestartPolicy
        from embedgate.engine.backends.torch.process_backend import ProcessBackend

        policy = RestartPolicy(max_failures=config.model_restart_failures_before_exit)
        backend = ProcessBackend.load(
            source.path, weights, text, torch_threads, forward_threads, policy
        )
    else:
        import torch

        from embedgate.engine.backends.torch.backend import TorchBackend

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        backend = TorchBackend.load(source.path, weights, text)
    # small batches keep a CPU's caches warm; GPUs need large ones to be busy
    limits = _limits(
        config,
        max_batch_tokens=16384 if wants_gpu else 4096,
        forward_threads=forward_threads,
    )
    return EmbeddingEngine(backend, source.name, source.aliases, limits, observer)


def load_reranker(
    config: EngineConfig,
    observer: SchedulerObserver | None = None,
    *,
    one_shot: bool = False,
) -> RerankEngine:
    """Load the configured reranker (a cross-encoder or Qwen3-Reranker) on PyTorch, in a model
    process or in this one as for embedding models; the engine is not started yet."""
    source = resolve_model(config.model, config.model_name, list(config.model_aliases))
    if config.upstreams or source.path.suffix.lower() == ".gguf":
        raise ValueError("rerankers run on PyTorch here: no gateway or GGUF reranker yet")
    spec = read_rerank_spec(source.path, name=config.model or source.name)
    if spec is None:
        raise ValueError(
            f"{source.path} is not a reranker: neither a *ForSequenceClassification "
            "cross-encoder nor a Qwen3 model whose name says Reranker"
        )
    wants_gpu = config.device == "cuda" or (config.device == "auto" and _cuda_available())
    use_process = config.model_process
    if use_process is None:
        use_process = not wants_gpu and not one_shot
    forward_threads, torch_threads = thread_plan(config, on_gpu=wants_gpu, cores=available_cores())
    weights = WeightOptions(config.dtype, config.device, config.onednn)
    backend: PairBackend
    if use_process:
        from embedgate.engine.backends.torch.model_process import RestartPolicy
        from embedgate.engine.backends.torch.rerank_backend import ProcessPairBackend

        policy = RestartPolicy(max_failures=config.model_restart_failures_before_exit)
        backend = ProcessPairBackend.load(
            source.path,
            spec,
            weights,
            threads=torch_threads,
            workers=forward_threads,
            policy=policy,
        )
    else:
        import torch

        from embedgate.engine.backends.torch.rerank_backend import TorchPairBackend

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        backend = TorchPairBackend.load(source.path, spec, weights)
    limits = _limits(
        config,
        max_batch_tokens=16384 if wants_gpu else 4096,
        forward_threads=forward_threads,
    )
    return RerankEngine(backend, source.name, source.aliases, limits, observer)


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
