"""Export an encoder's forward pass and pooling to ONNX, from the weights it serves.

Run once per model by the factory, in a child process (`python -m` this module), when the
small-pass runtime (`backends/onnx/`) is on and the data dir's cache has no file for the
model yet: the weights are read from the model directory, never downloaded. The graph takes
(input_ids, attention_mask) of any batch size and length and returns the pooled, not yet
normalised rows, exactly what `TorchModel.forward` returns; attention runs the eager
implementation (the one that exports exactly). The file is written beside its final name
and renamed, so a crash never leaves half a model in the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import torch

from embedgate.engine.backends.torch.pooling import pool
from embedgate.engine.model_spec import Pooling


class _PooledEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return pool(hidden.last_hidden_state, attention_mask, self.pooling)


def export_pooled_encoder(model_dir: Path, pooling: Pooling, target: Path) -> None:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = AutoModel.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    wrapped = _PooledEncoder(model, pooling).eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=4096)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial")
    with torch.inference_mode(False), torch.no_grad():
        program = cast(Any, torch.onnx).export(
            wrapped,
            (ids, mask),
            input_names=["input_ids", "attention_mask"],
            output_names=["pooled"],
            dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}),
            dynamo=True,
            external_data=False,
        )
    program.save(str(partial))
    partial.replace(target)


if __name__ == "__main__":
    directory, how, out = sys.argv[1:4]
    export_pooled_encoder(Path(directory), cast(Pooling, how), Path(out))
