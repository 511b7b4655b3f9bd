"""The inference engine: model loading, tokenisation, pooling and dynamic batching."""

from __future__ import annotations

from embedgate.config import Settings
from embedgate.engine.engine import EmbeddingEngine, Embeddings, EmbedRequest, EngineLimits
from embedgate.engine.loading import resolve_model
from embedgate.engine.scheduler import SchedulerObserver

__all__ = ["EmbedRequest", "EmbeddingEngine", "Embeddings", "EngineLimits", "build_engine"]


def build_engine(settings: Settings, observer: SchedulerObserver | None = None) -> EmbeddingEngine:
    """Load the configured model with the real PyTorch backend (slow: reads weights)."""
    import torch

    from embedgate.engine.torch_backend import TorchBackend

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    source = resolve_model(settings.model, settings.model_name, settings.model_aliases)
    backend = TorchBackend.load(
        source.path, settings.dtype, settings.device, settings.max_input_tokens
    )
    # small batches keep a CPU's caches warm; GPUs need large ones to be busy
    on_gpu = backend.device_name.startswith("cuda")
    limits = EngineLimits(
        max_inputs=settings.max_inputs_per_request,
        max_request_tokens=settings.max_request_tokens,
        max_batch_tokens=settings.max_batch_tokens or (16384 if on_gpu else 4096),
        max_queued_tokens=settings.max_queued_tokens,
        tokenizer_threads=settings.tokenizer_threads,
        batch_wait_ms=settings.batch_wait_ms,
    )
    return EmbeddingEngine(backend, source.name, source.aliases, limits, observer)
