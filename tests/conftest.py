"""Shared fixtures: model directories built once per session, engines on them, free ports."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# apps built without an explicit data_dir share this throw-away one, never the repo's ./data
os.environ["EMBEDGATE_DATA_DIR"] = tempfile.mkdtemp(prefix="embedgate-tests-")

from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, build_engine
from embedgate.engine.loading import bundled_model_dir
from support import models


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-qwen3")
    return models.build_tiny_qwen3(root / "Qwen3-Embedding-tiny", models.train_tiny_tokenizer())


@pytest.fixture(scope="session")
def tiny_qwen3_no_eos_dir(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-qwen3-noeos")
    return models.without_eos_postprocessor(tiny_qwen3_dir, root / "no-eos")


@pytest.fixture(scope="session")
def qwen_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random Qwen3 weights behind the real 151,669-token Qwen3 tokenizer."""
    root = tmp_path_factory.mktemp("qwen-vocab")
    return models.build_tiny_qwen3(
        root / "qwen-vocab", models.real_qwen_tokenizer(), hidden=32, layers=1
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return bundled_model_dir()


def start_engine(model: Path | None, **overrides: object) -> EmbeddingEngine:
    settings = Settings(model=str(model) if model else None, **overrides)  # type: ignore[arg-type]
    engine = build_engine(settings)
    engine.start()
    return engine


@pytest.fixture(scope="session")
def qwen3_engine(tiny_qwen3_dir: Path) -> Iterator[EmbeddingEngine]:
    # one forward thread: a request's inputs share one pass, as in the reference recipe's
    # batch. With two, timing decides whether they split, and a split pass rounds
    # differently (up to ~4e-5 on this tiny random model, against a 1e-5 bound).
    engine = start_engine(tiny_qwen3_dir, forward_threads=1)
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def minilm_engine() -> Iterator[EmbeddingEngine]:
    engine = start_engine(None)
    yield engine
    engine.stop()
