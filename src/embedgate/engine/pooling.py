"""Pooling and the final vector arithmetic, shared by every backend.

Order matters for Matryoshka: slice to the requested size first, then L2-normalise (normalising
first and slicing after gives vectors that are not unit length).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from embedgate.engine.model_spec import Pooling

FloatArray = npt.NDArray[np.float32]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Pool token states (batch, seq, dim) to one vector per row, in float32.

    Works for either padding side: the last real token is found from the mask, so a
    left-padded batch gives ``hidden[:, -1]`` and a right-padded one ``hidden[i, len_i - 1]``.
    """
    hidden = hidden.float()
    mask = attention_mask.to(hidden.device)
    if how == "last":
        seq_len = mask.shape[1]
        positions = torch.arange(seq_len, device=mask.device).expand_as(mask)
        last = (positions * mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "max":
        masked = hidden.masked_fill(weights == 0, float("-inf"))
        return masked.max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def finalize(pooled: FloatArray, dimensions: int | None, normalize: bool) -> FloatArray:
    """Slice to `dimensions` (Matryoshka), then L2-normalise when the model asks for it."""
    out = pooled if dimensions is None else pooled[:, :dimensions]
    out = np.ascontiguousarray(out, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, np.float32(1e-12))
    return out.astype(np.float32, copy=False)
