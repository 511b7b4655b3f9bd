"""The final vector arithmetic, shared by every backend (numpy only: the gateway and GGUF
modes never load torch; token pooling on tensors is in `backends/torch/pooling.py`).

Order matters for Matryoshka: slice to the requested size first, then L2-normalise (normalising
first and slicing after gives vectors that are not unit length).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def finalize(pooled: FloatArray, dimensions: int | None, normalize: bool) -> FloatArray:
    """Slice to `dimensions` (Matryoshka), then L2-normalise when the model asks for it."""
    out = pooled if dimensions is None else pooled[:, :dimensions]
    out = np.ascontiguousarray(out, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, np.float32(1e-12))
    return out.astype(np.float32, copy=False)
