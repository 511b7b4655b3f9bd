"""The default CPU backend: tokenise here, run the model in its own process.

The server process keeps the tokenizer (the event loop tokenises small requests inline) and
collates each batch; the weights live only in the model process (`model_process.py`), whose
forward passes never wait for the event loop's GIL. The scheduler's forward threads become
feeders: one hands the child its next batch while the child computes the current one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.backend import (
    BackendDescription,
    BackendHealth,
    TextOptions,
    WeightOptions,
)
from embedgate.engine.backends.hf_tokenizer import HFTokenizer, TokenizedBackend
from embedgate.engine.backends.torch.model_process import ModelProcess, RestartPolicy
from embedgate.engine.pooling import FloatArray


class ProcessBackend(TokenizedBackend):
    """An `HFTokenizer` in this process and a `TorchModel` in a child process."""

    def __init__(self, tokenizer: HFTokenizer, process: ModelProcess) -> None:
        info = process.info
        super().__init__(
            tokenizer,
            BackendDescription(
                runtime="torch-process", dtype=info.dtype_name, device=info.device_name
            ),
        )
        self.process = process

    @classmethod
    def load(
        cls,
        model_dir: Path,
        options: WeightOptions = WeightOptions(),
        text: TextOptions = TextOptions(),
        threads: int | None = None,
        workers: int = 1,
        policy: RestartPolicy = RestartPolicy(),
    ) -> ProcessBackend:
        from embedgate.engine.backends.torch.model import TorchModel

        tokenizer = HFTokenizer.load(model_dir, text)
        loader = functools.partial(TorchModel.load, model_dir, tokenizer.spec.pooling, options)
        process = ModelProcess(loader, threads, workers, policy, label=model_dir.name)
        return cls(tokenizer, process)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        return self.process.run(*self.tokenizer.collate(sequences))

    def health(self) -> BackendHealth:
        return self.process.health()

    def close(self) -> None:
        self.process.close()
