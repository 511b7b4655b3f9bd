"""Rerankers on PyTorch: the pair tokenizer here, the scoring model in a model process (the
CPU default, as for embeddings: its passes never wait for the server's GIL and a crash costs
only the pass) or on this process's threads (GPU, one-shot CLI)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from embedgate.engine.backend import (
    BackendDescription,
    BackendHealth,
    PairBackend,
    WeightOptions,
)
from embedgate.engine.backends.pair_tokenizer import PairTokenizer
from embedgate.engine.backends.torch.model_process import (
    ModelLoader,
    ModelProcess,
    ProcessModel,
    RestartPolicy,
)
from embedgate.engine.pooling import FloatArray
from embedgate.engine.rerank_spec import RerankSpec


class _PairSide(PairBackend):
    """What both runtimes share: the pair tokenizer and the description."""

    def __init__(self, tokenizer: PairTokenizer, description: BackendDescription) -> None:
        self.tokenizer = tokenizer
        self.spec = tokenizer.spec
        self.max_tokens = tokenizer.max_tokens
        self.description = description

    def sequences(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> list[list[int]]:
        return self.tokenizer.sequences(query, documents, instruction)

    def describe(self) -> BackendDescription:
        return self.description


def _loader(model_dir: Path, tokenizer: PairTokenizer, options: WeightOptions) -> ModelLoader:
    """Loads the scoring model where it is called (here, or in the model process); a
    partial of plain values, so it crosses to the child."""
    from embedgate.engine.backends.torch.reranker import TorchReranker

    yes_no = tokenizer.yes_no() if tokenizer.spec.kind == "qwen3" else None
    return functools.partial(
        TorchReranker.load,
        model_dir,
        tokenizer.spec,
        options,
        yes_no=yes_no,
        separator=tokenizer.separator,
    )


class TorchPairBackend(_PairSide):
    """The reranker runs on the caller's thread, in this process."""

    def __init__(self, tokenizer: PairTokenizer, model: ProcessModel) -> None:
        self.model = model
        super().__init__(
            tokenizer,
            BackendDescription(runtime="torch", dtype=model.dtype_name, device=model.device_name),
        )

    @classmethod
    def load(cls, model_dir: Path, spec: RerankSpec, options: WeightOptions) -> TorchPairBackend:
        tokenizer = PairTokenizer.load(model_dir, spec)
        return cls(tokenizer, _loader(model_dir, tokenizer, options)())

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        return self.model.forward(*self.tokenizer.collate(sequences)).reshape(-1, 1)

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if close is not None:
            close()


class ProcessPairBackend(_PairSide):
    """The reranker runs in a child process; this side tokenises and collates."""

    def __init__(self, tokenizer: PairTokenizer, process: ModelProcess) -> None:
        self.process = process
        info = process.info
        super().__init__(
            tokenizer,
            BackendDescription(
                runtime="torch-process", dtype=info.dtype_name, device=info.device_name
            ),
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        spec: RerankSpec,
        options: WeightOptions,
        *,
        threads: int | None = None,
        workers: int = 1,
        policy: RestartPolicy = RestartPolicy(),
    ) -> ProcessPairBackend:
        tokenizer = PairTokenizer.load(model_dir, spec)
        loader = _loader(model_dir, tokenizer, options)
        process = ModelProcess(loader, threads, workers, policy, label=model_dir.name)
        return cls(tokenizer, process)

    def forward(self, sequences: Sequence[Sequence[int]]) -> FloatArray:
        return self.process.run(*self.tokenizer.collate(sequences)).reshape(-1, 1)

    def health(self) -> BackendHealth:
        return self.process.health()

    def close(self) -> None:
        self.process.close()
