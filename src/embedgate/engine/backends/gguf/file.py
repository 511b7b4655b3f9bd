"""What a GGUF file is, read from its header (no weights loaded, no arrays materialised),
and the rules embedgate applies to it.

The file's own metadata is read but not trusted for the family's rules: a Qwen3 file is
pooled on its last token with `<|endoftext|>` always appended (early Qwen3 GGUFs did not add
it), L2-normalised, Matryoshka-sliced and renormalised, whatever its `pooling_type` and
`add_eos_token` say. Any other architecture is refused with one line: a text-generation GGUF
would load and produce vectors that mean nothing. (BERT-family GGUFs such as a converted MiniLM
are not served yet: their rules would be untested here, so they are refused like the rest.)
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgate.engine.model_spec import QWEN3_DEFAULT_TASK, QWEN3_MIN_DIMENSIONS, ModelSpec

EMBEDDING_ARCHITECTURES = ("qwen3",)
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
    quantization: str  # the file type (Q4_K_M, Q8_0, F16...) or the most common tensor type
    size_bytes: int


def _missing_extra() -> RuntimeError:
    return RuntimeError(f"GGUF models need the llama.cpp extra: {GGUF_EXTRA}")


# GGUF value types (the format's spec): fixed-size scalars, strings, arrays
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class _Header:
    values: dict[str, object]  # scalar and string values
    array_lengths: dict[str, int]  # arrays are skipped, their lengths kept
    tensor_types: dict[int, int]  # ggml type -> elements


class _Cursor:
    """Reads a GGUF header from an mmap; running past the end is a truncated file."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.at = 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ValueError("the file ends inside its header (truncated?)")
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.at + length > len(self.data):
            raise ValueError("the file ends inside its header (truncated?)")
        raw = self.data[self.at : self.at + length]
        self.at += length
        return raw.decode("utf-8", errors="replace")

    def skip(self, kind: int, count: int) -> None:
        if kind == _STRING:
            for _ in range(count):
                length = self.unpack("<Q")
                self.at += length
        elif kind in _SCALARS:
            self.at += struct.calcsize(_SCALARS[kind]) * count
        else:
            raise ValueError(f"unknown value type {kind}")
        if self.at > len(self.data):
            raise ValueError("the file ends inside its header (truncated?)")


def _read_header(path: Path) -> _Header:
    """The key/value pairs and tensor types, streamed from the file without materialising
    its arrays: the `gguf` package's reader builds every token of a 151k-token vocabulary as
    an object (0.9 GB at peak for Qwen3), which is what choosing GGUF is meant to avoid."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        if data[:4] != b"GGUF":
            raise ValueError("no GGUF magic at the start")
        cursor.at = 4
        version = cursor.unpack("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        tensors, pairs = cursor.unpack("<Q"), cursor.unpack("<Q")
        values: dict[str, object] = {}
        arrays: dict[str, int] = {}
        for _ in range(pairs):
            key, kind = cursor.string(), cursor.unpack("<I")
            if kind == _STRING:
                values[key] = cursor.string()
            elif kind == _ARRAY:
                item, count = cursor.unpack("<I"), cursor.unpack("<Q")
                arrays[key] = count
                cursor.skip(item, count)
            elif kind in _SCALARS:
                values[key] = cursor.unpack(_SCALARS[kind])
            else:
                raise ValueError(f"unknown value type {kind} for {key}")
        types: dict[int, int] = {}
        for _ in range(tensors):
            cursor.string()
            dims = cursor.unpack("<I")
            elements = 1
            for _ in range(dims):
                elements *= cursor.unpack("<Q")
            kind = cursor.unpack("<I")
            cursor.unpack("<Q")  # offset
            types[kind] = types.get(kind, 0) + elements
        return _Header(values, arrays, types)


def read_gguf(path: Path) -> GGUFFacts:
    """The file's facts; ValueError with one line when it is not a usable embedding GGUF."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        header = _read_header(path)
    except (ValueError, OSError, struct.error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path.name} is not a readable GGUF file ({first})") from None
    values = header.values
    arch = str(values.get("general.architecture") or "")

    def number(key: str) -> int | None:
        value = values.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, str) else None

    pooling = number(f"{arch}.pooling_type")
    adds_eos = values.get("tokenizer.ggml.add_eos_token")
    facts = GGUFFacts(
        path=path,
        architecture=arch,
        name=str(values.get("general.name") or path.stem),
        context_length=number(f"{arch}.context_length") or 0,
        embedding_length=number(f"{arch}.embedding_length") or 0,
        block_count=number(f"{arch}.block_count") or 0,
        vocab_size=header.array_lengths.get("tokenizer.ggml.tokens", 0),
        file_pooling=POOLING_NAMES.get(pooling) if pooling is not None else None,
        file_adds_eos=None if adds_eos is None else bool(adds_eos),
        eos_token_id=number("tokenizer.ggml.eos_token_id"),
        quantization=_quantization(number("general.file_type"), header.tensor_types),
        size_bytes=path.stat().st_size,
    )
    if facts.architecture not in EMBEDDING_ARCHITECTURES:
        raise ValueError(
            f"{path.name} is a {facts.architecture or 'unknown'} model, not an embedding "
            f"architecture embedgate serves ({', '.join(EMBEDDING_ARCHITECTURES)})"
        )
    if facts.embedding_length <= 0 or facts.vocab_size <= 0:
        raise ValueError(f"{path.name} lacks its embedding length or vocabulary")
    return facts


def _quantization(file_type: int | None, tensor_types: dict[int, int]) -> str:
    """The file type's name (MOSTLY_Q4_K_M -> Q4_K_M); without one, the tensors' most common
    type, weighted by elements. Names come from the `gguf` package when it is installed."""
    gguf: Any
    try:
        import gguf
    except ImportError:
        gguf = None
    if file_type is not None and gguf is not None:
        try:
            return (
                str(gguf.LlamaFileType(file_type).name).removeprefix("MOSTLY_").removeprefix("ALL_")
            )
        except ValueError:
            pass
    if not tensor_types:
        return "unknown"
    common = max(tensor_types, key=lambda k: tensor_types[k])
    if gguf is not None:
        try:
            return str(gguf.GGMLQuantizationType(common).name)
        except ValueError:
            pass
    return f"ggml type {common}"


DEFAULT_MAX_INPUT_TOKENS = 8192


def spec_for(facts: GGUFFacts, max_input_tokens: int | None = None) -> ModelSpec:
    """The family's rules, not the file's settings (see the module docstring). Inputs are
    capped at 8,192 tokens unless `max_input_tokens` says otherwise: llama.cpp sizes its KV
    cache for the longest input, and a Qwen3 GGUF's 32k context would cost gigabytes."""
    max_tokens = facts.context_length or 512
    max_tokens = min(max_tokens, max_input_tokens or DEFAULT_MAX_INPUT_TOKENS)
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
