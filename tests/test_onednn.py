"""Linear layers on packed oneDNN weights: same vectors as the model's own layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from embedgate.engine.backend import WeightOptions
from embedgate.engine.backends.torch import onednn
from embedgate.engine.backends.torch.model import TorchModel
from embedgate.engine.backends.torch.onednn import PackedLinear, pack_linear_layers
from embedgate.engine.model_spec import read_model_spec

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch built without oneDNN")


def _batch(rows: int, length: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab - 5, size=(rows, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, length // 2 :] = 0  # one padded row (right padding; pooling ignores it)
    return ids, mask


def _pair(model_dir: Path, dtype: str) -> tuple[TorchModel, TorchModel]:
    pooling = read_model_spec(model_dir).pooling
    packed = TorchModel.load(model_dir, pooling, WeightOptions(dtype, "cpu", onednn=True))
    plain = TorchModel.load(model_dir, pooling, WeightOptions(dtype, "cpu", onednn=False))
    return packed, plain


def _modules(model: TorchModel) -> list[nn.Module]:
    return list(model._model.modules())


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_minilm_float32_is_unchanged_and_fuses_gelu(minilm_dir: Path) -> None:
    packed, plain = _pair(minilm_dir, "float32")
    fused = [m for m in _modules(packed) if isinstance(m, PackedLinear) and m.activation == "gelu"]
    assert len(fused) == 6  # one intermediate block per layer
    assert not any(type(m) is nn.Linear for m in _modules(packed))
    assert packed.packed_layers == sum(isinstance(m, PackedLinear) for m in _modules(packed))
    assert plain.packed_layers == 0
    assert any(type(m) is nn.Linear for m in _modules(plain))
    for rows, length in ((1, 7), (5, 50), (33, 120)):
        ids, mask = _batch(rows, length, 30522)
        assert np.abs(packed.forward(ids, mask) - plain.forward(ids, mask)).max() <= 1e-5


def test_minilm_bfloat16_stays_at_float32_cosine(minilm_dir: Path) -> None:
    packed, plain = _pair(minilm_dir, "bfloat16")
    reference = TorchModel.load(
        minilm_dir, read_model_spec(minilm_dir).pooling, WeightOptions("float32", "cpu", False)
    )
    ids, mask = _batch(9, 64, 30522, seed=3)
    ours, theirs, exact = (_unit(m.forward(ids, mask)) for m in (packed, plain, reference))
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    # the fused GELU rounds once instead of twice: no further from fp32 than the plain bf16
    assert (ours * exact).sum(axis=1).min() >= 0.999
    assert (ours * exact).sum(axis=1).min() >= (theirs * exact).sum(axis=1).min() - 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_qwen3_linears_are_packed_without_changing_vectors(
    tiny_qwen3_dir: Path, dtype: str
) -> None:
    packed, plain = _pair(tiny_qwen3_dir, dtype)
    layers = len(packed._model.layers)
    if dtype == "bfloat16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # oneDNN's bf16 path needs AVX-512 (or AVX-NE-CONVERT): the layers stay as they
        # are and the model runs unpacked, with the same vectors
        assert packed.packed_layers == 0
    else:
        assert packed.packed_layers == 7 * layers  # q, k, v, o, gate, up, down
    ids, mask = _batch(4, 24, read_model_spec(tiny_qwen3_dir).vocab_size)
    mask[0] = 1  # Qwen3 pads on the left; keep every row whole here
    ours, theirs = packed.forward(ids, mask), plain.forward(ids, mask)
    if dtype == "float32":
        assert np.abs(ours - theirs).max() <= 1e-5
    else:
        assert (_unit(ours) * _unit(theirs)).sum(axis=1).min() >= 0.9999


class _Block(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.dense = nn.Linear(16, 32)
        self.intermediate_act_fn = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.intermediate_act_fn(self.dense(x))
        return out


def test_only_the_exact_gelu_is_fused() -> None:
    exact, tanh = _Block(nn.GELU()), _Block(nn.GELU(approximate="tanh"))
    x = torch.randn(3, 16)
    before = tanh(x)
    assert pack_linear_layers(exact) == 1 and pack_linear_layers(tanh) == 1
    assert isinstance(exact.dense, PackedLinear) and exact.dense.activation == "gelu"
    assert isinstance(exact.intermediate_act_fn, nn.Identity)
    # the tanh approximation is not oneDNN's GELU: the Linear is packed, the activation kept
    assert isinstance(tanh.dense, PackedLinear) and tanh.dense.activation == "none"
    assert isinstance(tanh.intermediate_act_fn, nn.GELU)
    with torch.inference_mode():
        assert torch.allclose(tanh(x), before, atol=1e-6)


def test_a_layer_that_disagrees_on_the_probe_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    original = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: original(self, x) + 1)
    assert pack_linear_layers(model) == 0
    assert all(type(model[i]) is nn.Linear for i in (0, 2))


def test_missing_ops_leave_the_model_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(*args: object) -> None:
        raise RuntimeError("No such operator mkldnn::_reorder_linear_weight")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", gone)
    model = nn.Sequential(nn.Linear(8, 8))
    assert pack_linear_layers(model) == 0
    assert type(model[0]) is nn.Linear
