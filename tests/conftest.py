"""Shared fixtures: model directories built once per session, engines on them, free ports.

Nothing here changes the environment at import time. The offline switches are set once, in
`pytest_configure`, and every test gets a data dir of its own (`EMBEDGATE_DATA_DIR`,
set with monkeypatch), so tests run in any order and in parallel (pytest-xdist) without
sharing state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedgate.engine import EmbeddingEngine
from embedgate.engine.loading import bundled_model_dir
from support import models
from support.docker import REPO, Build, Docker, base_images, build_embedgate, docker_daemon
from support.engines import start_engine

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def pytest_configure(config: pytest.Config) -> None:
    """No test may reach a model hub. huggingface_hub reads these once, when it is first
    imported, so they are set before collection imports it; subprocess servers inherit them.
    Already-set values win (a developer may point the tests elsewhere on purpose)."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` xdist marks a grouped test by a `@group` suffix on its node id;
    without it the group's tests spread over workers (the container tests would start two
    dockerds on one data root). A pytest/xdist pairing that drops the suffix fails here."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(f"xdist_group is not honoured by this pytest/xdist: {lost[:3]}")


@pytest.fixture(scope="session", autouse=True)
def no_shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A safety net under the per-test data dir: a module- or session-scoped fixture that
    builds settings without a data_dir (it should pass its own) never lands in ./data."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDGATE_DATA_DIR", str(tmp_path_factory.mktemp("session-data")))
        yield


@pytest.fixture(autouse=True)
def private_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Apps built without an explicit data_dir use this test's own throw-away one, never the
    repo's ./data and never another test's."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("EMBEDGATE_DATA_DIR", str(path))
    return path


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


@pytest.fixture(scope="session")
def qwen3_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3ForCausalLM named like Qwen3-Reranker, real Qwen vocabulary."""
    root = tmp_path_factory.mktemp("rerank")
    return models.build_tiny_qwen3_reranker(
        root / "Qwen3-Reranker-tiny", models.real_qwen_tokenizer()
    )


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT cross-encoder (one label) behind the bundled MiniLM's vocabulary."""
    root = tmp_path_factory.mktemp("cross")
    return models.build_tiny_cross_encoder(root / "ms-marco-tiny", bundled_model_dir())


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


@pytest.fixture
def remote_milvus() -> Iterator[str]:
    """A Milvus Lite server process of this test's own on a TCP port (it starts in under a
    second): the remote-store path, parametrised beside the embedded one."""
    from support.services import milvus_server

    with milvus_server() as server:
        yield server.uri


@pytest.fixture(params=["embedded", "remote"])
def milvus_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a knowledge-base test keeps its chunks: a Milvus Lite file of its own, or the
    Milvus server process reached over HTTP."""
    if request.param == "embedded":
        return str(tmp_path / "milvus.db")
    return str(request.getfixturevalue("remote_milvus"))


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """A private dockerd for the container tests (tests/support/docker.py)."""
    with docker_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="session")
def embedgate_image(docker: Docker) -> Build:
    """The Debian bases, the service look-alikes and embedgate:latest built air-gapped, once
    per run; how long each step took is written to build/container-build.json."""
    started = time.monotonic()
    base_images(docker)
    bases_s = time.monotonic() - started
    build = build_embedgate(docker)
    report = REPO / "build" / "container-build.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "base_images_s": round(bases_s, 1),
                "wheelhouse_s": round(build.wheelhouse_s, 1),
                "docker_build_s": round(build.build_s, 1),
                "image_bytes": build.size_bytes,
            }
        )
    )
    return build
