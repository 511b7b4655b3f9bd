"""The small-pass runtime: short passes of an encoder on ONNX Runtime, exported once from the
served weights into the cache, with the eager PyTorch forward's vectors (fp32, 1e-5), for any
batch size and length under the limit; bigger passes and decoder models stay on PyTorch; a
broken cache never stops the engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest, EngineConfig, load_engine

SHORT = ["how many days of annual leave", "VPN 密码怎么重置", "a"]
LONGER = ["Employees get fifteen days of annual leave per year, booked two weeks ahead. " * 3]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _engine(cache: Path | None, **options: object) -> EmbeddingEngine:
    config = EngineConfig(
        small_pass_runtime="onnx" if cache else "off",
        cache_dir=str(cache) if cache else None,
        **options,  # type: ignore[arg-type]
    )
    engine = load_engine(config)
    engine.start()
    return engine


@pytest.fixture(scope="module")
def engines(cache: Path) -> Iterator[tuple[EmbeddingEngine, EmbeddingEngine]]:
    fast, eager = _engine(cache), _engine(None)
    yield fast, eager
    fast.stop()
    eager.stop()


def test_short_passes_run_on_onnx_with_the_eager_vectors(
    engines: tuple[EmbeddingEngine, EmbeddingEngine], cache: Path
) -> None:
    fast, eager = engines
    assert fast.describe().runtime.endswith("+onnx-small-passes")
    assert eager.describe().runtime == "torch-process"
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1
    for texts in ([SHORT[0]], SHORT, LONGER, [SHORT[2]]):
        for input_type in ("query", "document"):
            got = fast.embed_sync(EmbedRequest(texts, input_type=input_type)).vectors
            want = eager.embed_sync(EmbedRequest(texts, input_type=input_type)).vectors
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-5, texts


def test_big_passes_stay_on_pytorch(engines: tuple[EmbeddingEngine, EmbeddingEngine]) -> None:
    fast, eager = engines
    backend = fast.backend
    calls: list[int] = []
    inner_forward = backend.inner.forward  # type: ignore[attr-defined]

    def counting(sequences: object) -> object:
        calls.append(len(sequences))  # type: ignore[arg-type]
        return inner_forward(sequences)

    backend.inner.forward = counting  # type: ignore[attr-defined]
    try:
        texts = [f"document number {i} about leave and travel" for i in range(64)]
        got = fast.embed_sync(EmbedRequest(texts)).vectors
        fast.embed_sync(EmbedRequest([SHORT[0]]))
    finally:
        backend.inner.forward = inner_forward  # type: ignore[attr-defined]
    assert sum(calls) == 64  # the bulk request on PyTorch, the single query not
    want = eager.embed_sync(EmbedRequest(texts)).vectors
    assert np.abs(got - want).max() <= 1e-5


def test_the_export_is_cached_and_a_broken_one_is_survived(cache: Path, tmp_path: Path) -> None:
    (exported,) = (cache / "onnx").glob("*.onnx")
    before = exported.stat().st_mtime_ns
    again = _engine(cache, model_process=False)
    try:
        assert again.describe().runtime.endswith("+onnx-small-passes")
        assert exported.stat().st_mtime_ns == before  # read, not exported again
    finally:
        again.stop()
    broken = tmp_path / "onnx" / exported.name  # a cache of its own: the others stay whole
    broken.parent.mkdir()
    broken.write_bytes(b"not a model")
    survivor = _engine(tmp_path, model_process=False)
    try:
        assert survivor.describe().runtime == "torch"  # warned, and serves on PyTorch
        assert survivor.embed_sync(EmbedRequest(SHORT)).vectors.shape[0] == 3
    finally:
        survivor.stop()


def test_a_decoder_model_is_not_exported(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path, model=str(tiny_qwen3_dir), model_process=False)
    try:
        assert engine.describe().runtime == "torch"
        assert not (tmp_path / "onnx").exists()
    finally:
        engine.stop()


def test_a_small_pass_that_finds_another_running_stays_on_pytorch(
    engines: tuple[EmbeddingEngine, EmbeddingEngine],
) -> None:
    """Under concurrent clients passes overlap: those stay on the PyTorch backend's thread
    plan (sending them to ONNX Runtime too cost a fifth of their throughput)."""
    import threading

    fast, _ = engines
    backend = fast.backend
    sequences = [[101, 2054, 102]]
    inner_forward = backend.inner.forward  # type: ignore[attr-defined]
    entered, release = threading.Event(), threading.Event()
    on_inner: list[int] = []

    def slow(batch: object) -> object:
        on_inner.append(len(batch))  # type: ignore[arg-type]
        entered.set()
        release.wait(10)
        return inner_forward(batch)

    backend.inner.forward = slow  # type: ignore[attr-defined]
    long_pass = [[101, *range(2000, 2300), 102]] * 2  # over the small-pass size
    try:
        first = threading.Thread(target=backend.forward, args=(long_pass,))
        first.start()
        assert entered.wait(10)
        before = backend.small_passes  # type: ignore[attr-defined]
        overlapping = threading.Thread(target=backend.forward, args=(sequences,))
        overlapping.start()
        time.sleep(0.2)
        release.set()
        first.join(10)
        overlapping.join(10)
        assert on_inner == [2, 1]  # the small pass went to PyTorch too
        assert backend.small_passes == before  # type: ignore[attr-defined]
        backend.forward(sequences)  # alone now: ONNX Runtime
        assert backend.small_passes == before + 1  # type: ignore[attr-defined]
    finally:
        backend.inner.forward = inner_forward  # type: ignore[attr-defined]


def test_dtype_auto_is_bf16_only_where_the_cpu_computes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from embedgate.engine import factory

    assert factory.resolve_dtype("float32", on_gpu=True) == "float32"  # told: kept
    assert factory.resolve_dtype("auto", on_gpu=True) == "bfloat16"
    native = factory.cpu_has_native_bf16()
    flags = Path("/proc/cpuinfo").read_text()
    assert native == ("amx_bf16" in flags or "avx512_bf16" in flags)
    engine = _engine(None, dtype="auto", model_process=False)
    try:
        assert engine.describe().dtype == ("bfloat16" if native else "float32")
    finally:
        engine.stop()
    monkeypatch.setattr(factory, "cpu_has_native_bf16", lambda: False)
    assert factory.resolve_dtype("auto", on_gpu=False) == "float32"
    monkeypatch.setattr(factory, "cpu_has_native_bf16", lambda: True)
    assert factory.resolve_dtype("auto", on_gpu=False) == "bfloat16"


def test_onnx_runtime_writes_no_telemetry(
    engines: tuple[EmbeddingEngine, EmbeddingEngine], cache: Path, tmp_path: Path
) -> None:
    """No device id, event store or session file: ONNX Runtime's 1DS telemetry stays off
    (with it on, a session writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime and
    $TMPDIR/.ses)."""
    import os
    import subprocess
    import sys

    (exported,) = (cache / "onnx").glob("*.onnx")
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    script = (
        "import numpy as np, pathlib\n"
        "from embedgate.engine.backends.onnx.small_pass import OnnxEncoder\n"
        f"encoder = OnnxEncoder(pathlib.Path({str(exported)!r}))\n"
        "print(encoder.forward(np.array([[101, 102]]), np.array([[1, 1]])).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "HOME": str(home), "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(1, 384)" in done.stdout
    assert list(home.rglob("*")) == [] and list(temp.rglob("*")) == []


def test_servers_starting_together_export_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers on one data dir (a restart overlapping the old process, or two replicas)
    both miss the cache at start: the second waits for the first's graph instead of
    exporting beside it (twice the CPU, one rename lost)."""
    import threading

    from embedgate.engine import factory

    exports: list[str] = []

    def slow_export(model_dir: Path, pooling: str, target: Path) -> None:
        exports.append(threading.current_thread().name)
        time.sleep(0.5)
        target.write_bytes(b"graph")

    monkeypatch.setattr(factory, "_export_now", slow_export)
    target = tmp_path / "onnx" / "model-0123.onnx"
    threads = [
        threading.Thread(target=factory._export, args=(tmp_path, "mean", target), name=f"s{i}")
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(exports) == 1 and target.read_bytes() == b"graph"
