"""Pooling token states to one vector per input, on torch tensors (the torch backends)."""

from __future__ import annotations

import torch

from embedgate.engine.model_spec import Pooling


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
