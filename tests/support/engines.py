"""Engines started straight from an `EngineConfig`, without server settings or Services."""

from __future__ import annotations

from pathlib import Path

from embedgate.engine import EmbeddingEngine, EngineConfig, load_engine


def start_engine(model: Path | None, **overrides: object) -> EmbeddingEngine:
    """An engine on its own config (no server settings), started."""
    config = EngineConfig(model=str(model) if model else None, **overrides)  # type: ignore[arg-type]
    engine = load_engine(config)
    engine.start()
    return engine
