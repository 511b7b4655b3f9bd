"""The in-process backend: tokenizer and PyTorch model share the server's process.

Forward passes run on the scheduler's threads, so they compete with the event loop for the
GIL between kernels; `process_backend.py` avoids that and is the default on a CPU. This one
serves GPUs by default, the CLI's one-shot `embed`, and `model_process=false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.backend import BackendDescription, TextOptions, WeightOptions
from embedgate.engine.backends.hf_tokenizer import HFTokenizer, TokenizedBackend
from embedgate.engine.backends.torch.model import TorchModel
from embedgate.engine.pooling import FloatArray


class TorchBackend(TokenizedBackend):
    """Tokenises with the model's fast tokenizer and runs the model on the caller's thread."""

    def __init__(self, tokenizer: HFTokenizer, model: TorchModel) -> None:
        super().__init__(
            tokenizer,
            BackendDescription(runtime="torch", dtype=model.dtype_name, device=model.device_name),
        )
        self.model = model

    @classmethod
    def load(
        cls,
        model_dir: Path,
        options: WeightOptions = WeightOptions(),
        text: TextOptions = TextOptions(),
    ) -> TorchBackend:
        tokenizer = HFTokenizer.load(model_dir, text)
        model = TorchModel.load(model_dir, tokenizer.spec.pooling, options)
        return cls(tokenizer, model)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        return self.model.forward(*self.tokenizer.collate(sequences))

    def close(self) -> None:
        self.model.close()
