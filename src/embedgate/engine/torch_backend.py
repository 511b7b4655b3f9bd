"""The in-process backend: tokenizer and PyTorch model share the server's process.

Forward passes run on the scheduler's threads, so they compete with the event loop for the
GIL between kernels; `process_backend.py` avoids that and is the default on a CPU. This one
serves the CLI's one-shot `embed`, GPUs where asked, and tests that poke at the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.backend import Backend
from embedgate.engine.hf_tokenizer import HFTokenizer
from embedgate.engine.pooling import FloatArray
from embedgate.engine.torch_model import TorchModel


class TorchBackend(Backend):
    """Tokenises with the model's fast tokenizer and runs the model on the caller's thread."""

    def __init__(self, tokenizer: HFTokenizer, model: TorchModel) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.spec = tokenizer.spec
        self.template = tokenizer.template
        self.device_name = model.device_name
        self.dtype_name = model.dtype_name

    @classmethod
    def load(
        cls,
        model_dir: Path,
        dtype: str = "float32",
        device: str = "auto",
        max_input_tokens: int | None = None,
    ) -> TorchBackend:
        tokenizer = HFTokenizer.load(model_dir, max_input_tokens)
        model = TorchModel.load(model_dir, tokenizer.spec.pooling, dtype, device)
        return cls(tokenizer, model)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.tokenize(texts)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        return self.model.forward(*self.tokenizer.collate(sequences))

    def close(self) -> None:
        self.model.close()
