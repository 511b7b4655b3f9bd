"""What embedgate will do with a model, without loading its weights (`embedgate inspect`).

For a directory: the rules read from its Hugging Face / sentence-transformers files. For a
GGUF file: its metadata, and the family's rules embedgate applies instead of the file's own
pooling and EOS settings (`backends/gguf/file.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedgate.engine.model_spec import ModelSpec, read_model_spec


@dataclass(frozen=True)
class ModelDescription:
    path: Path
    kind: str  # "directory" or "gguf"
    family: str
    architecture: str
    pooling: str
    eos: str  # how the end-of-sequence token is handled
    dimensions: int
    min_dimensions: int
    max_tokens: int
    precision: str  # dtype of a directory's weights, or a GGUF's quantisation
    size_bytes: int
    instructions: bool

    def lines(self) -> list[str]:
        dims = (
            f"{self.dimensions} (Matryoshka {self.min_dimensions}-{self.dimensions})"
            if self.min_dimensions < self.dimensions
            else f"{self.dimensions} (native only)"
        )
        return [
            f"model:        {self.path}",
            f"format:       {self.kind}, {self.architecture}",
            f"family:       {self.family}"
            + (" (queries take an instruction)" if self.instructions else ""),
            f"pooling:      {self.pooling}, then L2 normalise",
            f"eos:          {self.eos}",
            f"dimensions:   {dims}",
            f"max tokens:   {self.max_tokens}",
            f"precision:    {self.precision}",
            f"size on disk: {_size(self.size_bytes)}",
        ]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _eos_rule(spec: ModelSpec, file_adds: bool | None) -> str:
    if spec.family != "qwen3":
        return "as the tokenizer's template adds it"
    if file_adds is False:
        return "<|endoftext|> appended by embedgate (the file does not add it)"
    return "<|endoftext|> guaranteed at the end (appended when the tokenizer does not)"


def describe_model(path: Path) -> ModelDescription:
    """Raises ValueError (one line) for what embedgate cannot serve."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        from embedgate.engine.backends.gguf.file import read_gguf, spec_for

        facts = read_gguf(path)
        spec = spec_for(facts)
        return ModelDescription(
            path=path,
            kind="gguf",
            family=spec.family,
            architecture=facts.architecture,
            pooling=f"{spec.pooling} token" if spec.pooling == "last" else spec.pooling,
            eos=_eos_rule(spec, facts.file_adds_eos),
            dimensions=spec.native_dimensions,
            min_dimensions=spec.min_dimensions,
            max_tokens=spec.max_tokens,
            precision=facts.quantization,
            size_bytes=facts.size_bytes,
            instructions=spec.takes_instructions,
        )
    if not path.is_dir():
        raise ValueError(f"{path} is neither a model directory nor a .gguf file")
    spec = read_model_spec(path)
    config = json.loads((path / "config.json").read_text())
    weights = [p for p in path.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt"}]
    return ModelDescription(
        path=path,
        kind="directory",
        family=spec.family,
        architecture=str(config.get("model_type", "?")),
        pooling=f"{spec.pooling} token" if spec.pooling == "last" else spec.pooling,
        eos=_eos_rule(spec, None),
        dimensions=spec.native_dimensions,
        min_dimensions=spec.min_dimensions,
        max_tokens=spec.max_tokens,
        precision=str(config.get("torch_dtype") or config.get("dtype") or "float32"),
        size_bytes=sum(p.stat().st_size for p in weights),
        instructions=spec.takes_instructions,
    )
