"""The engine's part of the server's settings: `Settings` translated into `EngineConfig`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedgate.config import MODEL_LIMITS, Settings, Upstream
from embedgate.engine import EngineConfig
from embedgate.engine.config import UpstreamConfig
from embedgate.engine.rerank_spec import read_rerank_spec
from embedgate.security.secret_files import read_secret_file


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's own record, read off the server's settings: every `EngineConfig` field
    is the `Settings` field of the same name, except those `_TRANSLATED` says how to build.
    A field added to one and not the other fails here at start-up and in
    tests/test_settings.py, not silently at its default."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(EngineConfig):
        translate = _TRANSLATED.get(item.name)
        values[item.name] = translate(settings) if translate else getattr(settings, item.name)
    return EngineConfig(**values)


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


_TRANSLATED: dict[str, Callable[[Settings], Any]] = {
    "model_aliases": lambda settings: tuple(settings.model_aliases),
    "upstreams": upstream_configs,
    "task": lambda settings: None,  # the first model's task is read from its directory
    "cache_dir": lambda settings: str(settings.data_dir / "cache"),
}


def extra_model_configs(settings: Settings) -> list[EngineConfig]:
    """The engines of the models served beside `model`: each entry's path, name, aliases,
    dtype, limits and upstreams (gateway mode for that model, with the server's upstream
    key and limits) over the server's engine settings, with its task (`embed` or `rerank`)
    settled: the entry's own, else read from the model directory."""
    base = engine_config(settings)
    configs = []
    for one in settings.model_entries():
        configs.append(
            dataclasses.replace(
                base,
                model=one.path,
                model_name=one.name,
                model_aliases=tuple(one.aliases),
                dtype=one.dtype or settings.dtype,
                task=one.task or model_task(Path(one.path), name=one.name),
                upstreams=tuple(
                    UpstreamConfig(
                        url=url,
                        model=one.upstream_model or one.name,
                        api_key=_upstream_key(
                            settings.upstream_api_key_file, settings.upstream_api_key_env
                        ),
                        max_batch=settings.upstream_max_batch,
                        max_concurrency=settings.upstream_max_concurrency,
                        timeout_s=settings.upstream_timeout_s,
                        api=one.upstream_api,
                    )
                    for url in one.upstreams
                ),
                **{limit: getattr(one, limit) for limit in MODEL_LIMITS if getattr(one, limit)},
            )
        )
    return configs


def model_task(path: Path, *, name: str | None = None) -> str:
    """`rerank` for a cross-encoder or a Qwen3 model named a reranker, else `embed` (a GGUF
    file or a directory that cannot be read is left for loading to report)."""
    if not (path / "config.json").is_file():
        return "embed"
    return "rerank" if read_rerank_spec(path, name=name or path.name) is not None else "embed"
