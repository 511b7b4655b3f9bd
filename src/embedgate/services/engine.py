"""The engine's part of the server's settings, and bringing the model up behind /ready."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from embedgate.config import Settings, Upstream
from embedgate.engine import EmbeddingEngine, EngineConfig
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.selftest import run_self_test
from embedgate.engine.upstream import UpstreamConfig
from embedgate.security.secret_files import read_secret_file

log = logging.getLogger("embedgate.app")

EngineFactory = Callable[[EngineConfig, SchedulerObserver], EmbeddingEngine]


class ModelHolder(Protocol):
    """What `bring_up` reads and fills in (`Services`), named here so that this module
    does not import the composition root that imports it."""

    settings: Settings
    engine: EmbeddingEngine | None
    ready: bool
    reason: str

    @property
    def metrics(self) -> SchedulerObserver: ...


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's own record, read off the server's settings (names match one to one)."""
    return EngineConfig(
        model=settings.model,
        model_name=settings.model_name,
        model_aliases=tuple(settings.model_aliases),
        upstreams=upstream_configs(settings),
        upstream_deadline_s=settings.upstream_deadline_s,
        upstream_health_interval_s=settings.upstream_health_interval_s,
        dtype=settings.dtype,
        device=settings.device,
        onednn=settings.onednn,
        model_process=settings.model_process,
        model_restart_failures_before_exit=settings.model_restart_failures_before_exit,
        forward_threads=settings.forward_threads,
        torch_threads=settings.torch_threads,
        max_input_tokens=settings.max_input_tokens,
        pad_to_multiple_of=settings.pad_to_multiple_of,
        max_batch_tokens=settings.max_batch_tokens,
        batch_wait_ms=settings.batch_wait_ms,
        tokenizer_threads=settings.tokenizer_threads,
        gguf_group_tokens=settings.gguf_group_tokens,
        max_inputs_per_request=settings.max_inputs_per_request,
        max_request_tokens=settings.max_request_tokens,
        max_queued_tokens=settings.max_queued_tokens,
        max_queue_seconds=settings.max_queue_seconds,
    )


def upstream_configs(settings: Settings) -> tuple[UpstreamConfig, ...]:
    """Gateway mode's upstreams: each table's own values, the `upstream_*` settings for what
    it leaves out. Keys come from a 0600 file or a named variable, never a command line."""
    out = []
    for entry in settings.upstreams:
        one = entry if isinstance(entry, Upstream) else Upstream(url=entry)
        out.append(
            UpstreamConfig(
                url=one.url,
                model=one.model or settings.upstream_model or settings.model_name,
                api_key=(  # the table's own key source, else the shared one
                    _upstream_key(one.api_key_file, one.api_key_env)
                    if one.api_key_file or one.api_key_env
                    else _upstream_key(
                        settings.upstream_api_key_file, settings.upstream_api_key_env
                    )
                ),
                max_batch=one.max_batch or settings.upstream_max_batch,
                max_concurrency=one.max_concurrency or settings.upstream_max_concurrency,
                weight=one.weight,
                timeout_s=one.timeout_s or settings.upstream_timeout_s,
            )
        )
    return tuple(out)


def _upstream_key(path: Path | None, variable: str | None) -> str | None:
    if path is not None:
        return read_secret_file(path).decode().strip()
    if variable:
        return os.environ.get(variable) or None
    return None


async def bring_up(services: ModelHolder, factory: EngineFactory) -> None:
    """Load the model on a worker thread (so /health answers while a large model loads),
    start it, run the self-test, and only then mark the services ready."""
    config = engine_config(services.settings)
    try:
        engine = await asyncio.to_thread(factory, config, services.metrics)
    except Exception as exc:
        services.reason = f"loading the model failed: {exc}"
        log.error("model load failed", extra={"reason": services.reason})
        return
    engine.start()
    services.engine = engine
    log.info(
        "model loaded",
        extra={
            "model": engine.name,
            "family": engine.spec.family,
            "dtype": engine.backend.dtype_name,
            "device": engine.backend.device_name,
            "dimensions": engine.spec.native_dimensions,
            "max_input_tokens": engine.max_input_tokens,
        },
    )
    while (waiting := engine.backend.unavailable) is not None:  # gateway: no upstream yet
        services.reason = waiting
        await asyncio.sleep(1.0)
    if services.settings.self_test:
        services.reason = "running the self-test"
        result = await asyncio.to_thread(run_self_test, engine)
        if not result.ok:
            services.reason = f"self-test failed: {result.reason}"
            log.error("self-test failed; staying not-ready", extra={"reason": result.reason})
            return
        log.info("self-test passed", extra={"detail": result.reason})
    services.ready = True
    services.reason = "ready"
