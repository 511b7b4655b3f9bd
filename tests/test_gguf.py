"""GGUF models through llama.cpp: a tiny Qwen3 written as GGUF at test time (the real Qwen
vocabulary as tokenizer metadata) gives the torch backend's vectors, within each format's
quantisation error; tokenisation matches the Hugging Face tokenizer; the family's rules hold
whatever the file says; bad files fail with one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedgate.engine import EmbeddingEngine, EmbedRequest
from embedgate.engine.backend import TextOptions
from support import models
from support.gguf_models import quantize_with_llama_cpp, write_qwen3_gguf

QUERY_TASK = "Given a question, retrieve passages that answer it"
MIXED = "年假 can roll over 🙂 to\tQ1 —  emoji 👩‍💻 and   spaces\n换行"
DOCUMENTS = [
    "Annual leave is fifteen days a year.",
    "正式员工每年享有十五天带薪年假，须提前两周申请。",
    "short",
    MIXED,
    " ".join(["The VPN needs the WireGuard client and a hardware token."] * 12),
]
QUERIES = ["how many days of annual leave?", "年假可以顺延吗", "vpn 🙂"]
# what each format must reach against the torch backend's fp32 vectors
BOUNDS = {"F32": ("maxabs", 1e-4), "F16": ("cosine", 0.9995), "Q8_0": ("cosine", 0.999)}
# Q4_0 / Q4_1 from the gguf package: measured 0.956 / 0.975 on this model; the 0.98 target is
# for Q4_K_M, what Qwen publishes (test_q4_k_m_from_llama_cpps_quantizer)
Q4_FLOOR = 0.95


@pytest.fixture(scope="session")
def gguf_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random Qwen3 weights behind the real 151,669-token Qwen3 tokenizer."""
    root = tmp_path_factory.mktemp("gguf-source")
    return models.build_tiny_qwen3(
        root / "Qwen3-Embedding-tiny",
        models.real_qwen_tokenizer(),
        hidden=64,
        layers=2,
        init_std=0.05,
    )


@pytest.fixture(scope="session")
def gguf_files(gguf_source: Path) -> dict[str, Path]:
    out = {}
    for kind in ("F32", "F16", "Q8_0", "Q4_1", "Q4_0"):
        out[kind] = write_qwen3_gguf(gguf_source, gguf_source.parent / f"tiny-{kind}.gguf", kind)
    out["F32-no-eos"] = write_qwen3_gguf(
        gguf_source,
        gguf_source.parent / "tiny-F32-noeos.gguf",
        "F32",
        add_eos=False,
        pooling="mean",  # and a wrong pooling: embedgate applies Qwen3's rules regardless
    )
    return out


def _engine(model: Path) -> EmbeddingEngine:
    from support.engines import start_engine

    return start_engine(model, forward_threads=1, model_process=False)


@pytest.fixture(scope="session")
def torch_engine(gguf_source: Path) -> Iterator[EmbeddingEngine]:
    engine = _engine(gguf_source)
    yield engine
    engine.stop()


def _requests() -> list[EmbedRequest]:
    out = []
    for dims in (None, 64, 32):
        out.append(EmbedRequest(DOCUMENTS, dimensions=dims, input_type="document"))
        out.append(
            EmbedRequest(QUERIES, dimensions=dims, input_type="query", instruction=QUERY_TASK)
        )
    return out


def _vectors(engine: EmbeddingEngine) -> list[np.ndarray]:
    return [engine.embed_sync(request).vectors for request in _requests()]


@pytest.mark.parametrize("kind", ["F32", "F16", "Q8_0", "Q4_1", "Q4_0"])
def test_gguf_vectors_match_the_torch_backend(
    kind: str, gguf_files: dict[str, Path], torch_engine: EmbeddingEngine
) -> None:
    engine = _engine(gguf_files[kind])
    try:
        got, want = _vectors(engine), _vectors(torch_engine)
        for request, g, w in zip(_requests(), got, want, strict=True):
            assert g.shape == w.shape == (len(request.inputs), request.dimensions or 64)
            np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
        cosine = min(float((g * w).sum(axis=1).min()) for g, w in zip(got, want, strict=True))
        maxabs = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
        print(f"{kind}: min cosine {cosine:.6f}, max abs diff {maxabs:.2e}")
        measure, bound = BOUNDS.get(kind, ("cosine", Q4_FLOOR))
        if measure == "maxabs":
            assert maxabs <= bound
        else:
            assert cosine >= bound
        # one input at a time gives exactly the batched vectors
        for request, batched in zip(_requests()[:2], got[:2], strict=True):
            for i, text in enumerate(request.inputs):
                alone = engine.embed_sync(
                    EmbedRequest(
                        [text], input_type=request.input_type, instruction=request.instruction
                    )
                ).vectors[0]
                if kind.startswith("Q"):  # quantised: the same bits, alone or batched
                    np.testing.assert_array_equal(alone, batched[i])
                else:  # F32 / F16: llama.cpp's float attention differs by rounding only
                    np.testing.assert_allclose(alone, batched[i], rtol=0, atol=2e-4)
        assert engine.describe().quantization == kind
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def k_quant_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """K-quants work on 256-wide rows: a tiny Qwen3 with hidden 256 (init std 0.02, as real
    Qwen3 initialises), so every matrix really is 4-bit in Q4_K_M."""
    root = tmp_path_factory.mktemp("k-quant-source")
    return models.build_tiny_qwen3(
        root / "Qwen3-Embedding-k",
        models.real_qwen_tokenizer(),
        hidden=256,
        layers=2,
        init_std=0.02,
    )


def test_q4_k_m_from_llama_cpps_quantizer(k_quant_source: Path) -> None:
    full = write_qwen3_gguf(k_quant_source, k_quant_source.parent / "k-F32.gguf", "F32")
    q4 = quantize_with_llama_cpp(full, k_quant_source.parent / "k-Q4_K_M.gguf", "Q4_K_M")
    reference, engine = _engine(k_quant_source), _engine(q4)
    try:
        got, want = _vectors(engine), _vectors(reference)
        by_size: dict[int, float] = {}
        for g, w in zip(got, want, strict=True):
            low = float((g * w).sum(axis=1).min())
            by_size[g.shape[1]] = min(by_size.get(g.shape[1], 1.0), low)
        print(f"Q4_K_M: min cosine by dimensions {by_size}")
        assert by_size[256] >= 0.98  # the target, at the native size
        assert min(by_size.values()) >= 0.975  # Matryoshka slices keep a little less
        assert engine.describe().quantization == "Q4_K_M"
        batched = got[0]
        for i, text in enumerate(DOCUMENTS):
            alone = engine.embed_sync(EmbedRequest([text], input_type="document")).vectors[0]
            np.testing.assert_allclose(alone, batched[i], rtol=0, atol=1e-6)  # rounding only
    finally:
        engine.stop()
        reference.stop()


def test_llama_cpp_tokens_equal_the_hugging_face_ids(
    gguf_files: dict[str, Path], gguf_source: Path
) -> None:
    from transformers import AutoTokenizer

    from embedgate.engine.backends.gguf.backend import GGUFBackend

    hf = AutoTokenizer.from_pretrained(str(gguf_source))
    backend = GGUFBackend.load(gguf_files["Q8_0"], TextOptions(), cores=2)
    try:
        for text in (MIXED, "  leading and trailing  ", "<|endoftext|> in text", "数字 12345 ١٢٣"):
            ids = backend.tokenize([text])[0]
            assert ids == hf(text, add_special_tokens=False)["input_ids"], text
            wrapped = backend.template.wrap(ids, 0, False)
            assert wrapped[-1] == hf.convert_tokens_to_ids("<|endoftext|>") == wrapped[-1]
            assert wrapped == hf(text)["input_ids"]  # the HF post-processor appends EOS too
    finally:
        backend.close()


def test_eos_and_pooling_follow_the_family_not_the_file(gguf_files: dict[str, Path]) -> None:
    """An early-style file (no EOS added, mean pooling in its metadata) embeds exactly like
    the correct one: embedgate appends <|endoftext|> and pools the last token."""
    good, early = _engine(gguf_files["F32"]), _engine(gguf_files["F32-no-eos"])
    try:
        request = EmbedRequest(DOCUMENTS, input_type="document")
        np.testing.assert_array_equal(
            good.embed_sync(request).vectors, early.embed_sync(request).vectors
        )
    finally:
        good.stop()
        early.stop()


def test_bad_files_fail_with_one_line(gguf_files: dict[str, Path], tmp_path: Path) -> None:
    from embedgate.engine.backends.gguf.file import read_gguf

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_files["Q8_0"].read_bytes()[:4096])
    with pytest.raises(ValueError, match=r"truncated.gguf is not a readable GGUF file") as info:
        read_gguf(truncated)
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        read_gguf(garbage)


def test_a_text_generation_gguf_is_refused(gguf_source: Path, tmp_path: Path) -> None:
    llama = write_qwen3_gguf(gguf_source, tmp_path / "chat.gguf", "Q8_0", architecture="llama")
    result = subprocess.run(
        [sys.executable, "-m", "embedgate", "serve", "--model", str(llama), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "chat.gguf is a llama model, not an embedding architecture" in result.stderr
    inspect = subprocess.run(
        [sys.executable, "-m", "embedgate", "inspect", str(llama)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspect.returncode == 2 and len(inspect.stderr.strip().splitlines()) == 1


def test_a_missing_extra_names_the_install_command(
    gguf_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgate.engine.backends.gguf.backend import GGUFBackend
    from embedgate.engine.backends.gguf.file import read_gguf, spec_for

    facts = read_gguf(gguf_files["Q8_0"])
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the extra were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'embedgate\[gguf\]'"):
        GGUFBackend(facts, spec_for(facts), None)  # type: ignore[arg-type]


def test_inspect_prints_what_embedgate_will_do(gguf_files: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedgate", "inspect", str(gguf_files["F32-no-eos"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "family:       qwen3" in out and "last token" in out
    assert "appended by embedgate (the file does not add it)" in out
    assert "64 (Matryoshka 32-64)" in out and "precision:    F32" in out
    assert "size on disk:" in out and "max tokens:   512" in out


@pytest.mark.slow
def test_a_gguf_model_behind_a_real_server(
    gguf_files: dict[str, Path], torch_engine: EmbeddingEngine, tmp_path: Path
) -> None:
    """`embedgate serve --model tiny-Q8_0.gguf`: the openai SDK with `dimensions` and
    `input_type`, /v1/models with the quantisation, and the knowledge base end to end."""
    import base64

    import httpx
    from openai import OpenAI

    from support.processes import serving
    from support.servers import wait_job_done

    with serving(tmp_path / "data", "--model", str(gguf_files["Q8_0"])) as served:
        key = served.admin["Authorization"].removeprefix("Bearer ")
        api = OpenAI(base_url=served.base + "/v1", api_key=key, max_retries=0)
        model = api.models.list().data[0]
        assert model.id == "tiny-Q8_0" and model.model_extra["quantization"] == "Q8_0"  # type: ignore[index]
        answer = api.embeddings.create(
            model="tiny-Q8_0",
            input=QUERIES,
            dimensions=32,
            encoding_format="base64",
            extra_body={"input_type": "query", "instruction": QUERY_TASK},
        )
        got = np.stack(
            [np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in answer.data]  # type: ignore[arg-type]
        )
        want = torch_engine.embed_sync(
            EmbedRequest(QUERIES, dimensions=32, input_type="query", instruction=QUERY_TASK)
        ).vectors
        assert got.shape == (3, 32) and float((got * want).sum(axis=1).min()) >= 0.999
        assert answer.usage.prompt_tokens > 3 * 10  # the instruction is counted

        http = httpx.Client(base_url=served.base, headers=served.admin, timeout=60)
        assert http.post("/v1/collections", json={"name": "handbook"}).status_code == 201
        for name, text in (
            ("leave.md", "# Leave\n\nAnnual leave is fifteen days a year."),
            ("vpn.md", "# VPN\n\nThe VPN needs the WireGuard client and a hardware token."),
        ):
            accepted = http.post(
                "/v1/collections/handbook/documents", files={"file": (name, text.encode())}
            ).json()
            job = wait_job_done(http, accepted["job"]["id"])
            assert job["status"] == "succeeded", job
        hits = http.post(
            "/v1/collections/handbook/search", json={"query": "WireGuard hardware token"}
        ).json()
        assert hits["data"][0]["filename"] == "vpn.md"
