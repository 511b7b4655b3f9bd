"""The weights side: a Hugging Face model run with PyTorch (CPU or GPU, fp32 or bf16).

Takes collated ids and returns pooled rows; it knows nothing of text, so the same object runs
on the server's threads (`backend.py`) or alone in a model process (`process_backend.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedgate.engine.backend import WeightOptions
from embedgate.engine.backends.hf_tokenizer import IdArray
from embedgate.engine.backends.torch.pooling import pool
from embedgate.engine.model_spec import Pooling
from embedgate.engine.pooling import FloatArray

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA device is available")
    return torch.device(device)


class TorchModel:
    """A loaded model in eval mode and how its token states become one vector."""

    def __init__(self, model: Any, pooling: Pooling, packed_layers: int = 0) -> None:
        self._model = model
        self.packed_layers = packed_layers  # Linear layers running on packed oneDNN weights
        self._pooling = pooling
        parameter = next(model.parameters())
        self._device = parameter.device
        self.device_name = str(self._device)
        self.dtype_name = {v: k for k, v in DTYPES.items()}[parameter.dtype]

    @classmethod
    def load(cls, model_dir: Path, pooling: Pooling, options: WeightOptions) -> TorchModel:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        # load in fp32 explicitly: bf16 checkpoints would otherwise stay bf16
        model = AutoModel.from_pretrained(
            str(model_dir), dtype=torch.float32, trust_remote_code=False
        )
        device = pick_device(options.device)
        model = model.to(device=device, dtype=DTYPES[options.dtype]).eval()
        packed = 0
        if options.onednn and device.type == "cpu":
            from embedgate.engine.backends.torch.onednn import pack_linear_layers

            packed = pack_linear_layers(model)
        return cls(model, pooling, packed)

    def forward(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """Pooled, not yet normalised float32 rows for a collated batch."""
        input_ids = torch.from_numpy(ids).to(self._device)
        attention_mask = torch.from_numpy(mask).to(self._device)
        with torch.inference_mode():
            hidden = self._model(input_ids=input_ids, attention_mask=attention_mask)
            pooled = pool(hidden.last_hidden_state, attention_mask, self._pooling)
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self._model = None
