"""What a GGUF file is, read from its metadata with the `gguf` package (no weights loaded),
and the rules embedgate applies to it.

The file's own metadata is read but not trusted for the family's rules: a Qwen3 file is
pooled on its last token with `<|endoftext|>` always appended (early Qwen3 GGUFs did not add
it), L2-normalised, Matryoshka-sliced and renormalised, whatever its `pooling_type` and
`add_eos_token` say. A BERT file (MiniLM and friends, converted) is mean-pooled and
normalised, as sentence-transformers does. Any other architecture is refused with one line:
a text-generation GGUF would load and produce vectors that mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgate.engine.model_spec import QWEN3_DEFAULT_TASK, QWEN3_MIN_DIMENSIONS, ModelSpec

EMBEDDING_ARCHITECTURES = ("qwen3", "bert")
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
GGUF_EXTRA = "pip install 'embedgate[gguf]'"


@dataclass(frozen=True)
class GGUFFacts:
    """The metadata embedgate reads and `embedgate inspect` prints."""

    path: Path
    architecture: str
    name: str
    context_length: int
    embedding_length: int
    block_count: int
    vocab_size: int
    file_pooling: str | None  # what the file says; embedgate applies the family's rule
    file_adds_eos: bool | None
    eos_token_id: int | None
    bos_token_id: int | None
    sep_token_id: int | None
    quantization: str  # the file type (Q4_K_M, Q8_0, F16...) or the most common tensor type
    size_bytes: int


def _missing_extra() -> RuntimeError:
    return RuntimeError(f"GGUF models need the llama.cpp extra: {GGUF_EXTRA}")


def _scalar(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    if field is None:
        return None
    return field.contents()


def read_gguf(path: Path) -> GGUFFacts:
    """The file's facts; ValueError with one line when it is not a usable embedding GGUF."""
    try:
        import gguf
    except ImportError:
        raise _missing_extra() from None
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        reader = gguf.GGUFReader(str(path))
        architecture = str(_scalar(reader, "general.architecture") or "")
        tokens = reader.get_field("tokenizer.ggml.tokens")
        arch = architecture

        def key(name: str) -> Any:
            return _scalar(reader, f"{arch}.{name}")

        file_type = _scalar(reader, "general.file_type")
        quantization = _quantization(reader, file_type)
        facts = GGUFFacts(
            path=path,
            architecture=architecture,
            name=str(_scalar(reader, "general.name") or path.stem),
            context_length=int(key("context_length") or 0),
            embedding_length=int(key("embedding_length") or 0),
            block_count=int(key("block_count") or 0),
            vocab_size=len(tokens.data) if tokens is not None else 0,
            file_pooling=POOLING_NAMES.get(int(key("pooling_type")))
            if key("pooling_type") is not None
            else None,
            file_adds_eos=_optional_bool(_scalar(reader, "tokenizer.ggml.add_eos_token")),
            eos_token_id=_optional_int(_scalar(reader, "tokenizer.ggml.eos_token_id")),
            bos_token_id=_optional_int(_scalar(reader, "tokenizer.ggml.bos_token_id")),
            sep_token_id=_optional_int(_scalar(reader, "tokenizer.ggml.seperator_token_id")),
            quantization=quantization,
            size_bytes=path.stat().st_size,
        )
    except (ValueError, IndexError, KeyError, OSError, TypeError, AssertionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path.name} is not a readable GGUF file ({first})") from None
    if facts.architecture not in EMBEDDING_ARCHITECTURES:
        raise ValueError(
            f"{path.name} is a {facts.architecture or 'unknown'} model, not an embedding "
            f"architecture embedgate serves ({', '.join(EMBEDDING_ARCHITECTURES)})"
        )
    if facts.embedding_length <= 0 or facts.vocab_size <= 0:
        raise ValueError(f"{path.name} lacks its embedding length or vocabulary")
    return facts


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _quantization(reader: Any, file_type: Any) -> str:
    """The file type's name (MOSTLY_Q4_K_M -> Q4_K_M); without one, the tensors' most common
    type, weighted by elements."""
    import gguf

    if file_type is not None:
        try:
            name = gguf.LlamaFileType(int(file_type)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + int(
            tensor.n_elements
        )
    return max(counts, key=lambda k: counts[k]) if counts else "unknown"


DEFAULT_MAX_INPUT_TOKENS = 8192


def spec_for(facts: GGUFFacts, max_input_tokens: int | None = None) -> ModelSpec:
    """The family's rules, not the file's settings (see the module docstring). Inputs are
    capped at 8,192 tokens unless `max_input_tokens` says otherwise: llama.cpp sizes its KV
    cache for the longest input, and a Qwen3 GGUF's 32k context would cost gigabytes."""
    max_tokens = facts.context_length or 512
    max_tokens = min(max_tokens, max_input_tokens or DEFAULT_MAX_INPUT_TOKENS)
    if facts.architecture == "qwen3":
        return ModelSpec(
            family="qwen3",
            native_dimensions=facts.embedding_length,
            max_tokens=max_tokens,
            pooling="last",
            normalize=True,
            padding_side="left",
            min_dimensions=min(QWEN3_MIN_DIMENSIONS, facts.embedding_length),
            default_task=QWEN3_DEFAULT_TASK,
            vocab_size=facts.vocab_size,
        )
    return ModelSpec(  # bert: as sentence-transformers pools MiniLM
        family="sentence-transformers",
        native_dimensions=facts.embedding_length,
        max_tokens=max_tokens,
        pooling="mean",
        normalize=True,
        padding_side="right",
        min_dimensions=facts.embedding_length,
        vocab_size=facts.vocab_size,
    )
