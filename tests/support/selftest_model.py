"""The toolchain self-test's model: RMSNorm, then a 4-bit group-quantized Linear (with a minimum per group,
the presets' format), dynamic sequence length.

Small, but it exercises what every real model needs from the chain: a reduction kernel, the fused
dequantize-matmul over packed uint32 weights, a symbolic shape, and the parameters passed from JS.
"""
from __future__ import annotations

import numpy as np
from tvm.relax.frontend import nn

from modelbuild.quantization.group_quant import GroupQuantLinear, WeightFormat, pack, quantize_with_min, unpack

HIDDEN, OUT = 128, 96
EPS = 1e-5
Q4F32 = WeightFormat(bits=4, dtype="float32")


class NormThenQ4Linear(nn.Module):
    def __init__(self):
        self.norm = nn.RMSNorm(HIDDEN, axes=-1, epsilon=EPS, bias=False)
        self.proj = GroupQuantLinear(HIDDEN, OUT, Q4F32)

    def forward(self, x: nn.Tensor) -> nn.Tensor:  # (1, n, HIDDEN) -> (1, n, OUT)
        return self.proj(self.norm(x))


def export():
    """The Relax module and its parameter names, in the order the function takes them after `x`."""
    mod, params = NormThenQ4Linear().export_tvm(spec={"forward": {"x": nn.spec.Tensor([1, "n", HIDDEN], "float32")}})
    return mod, [name for name, _ in params]


def make_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = pack(quantize_with_min(0.1 * rng.standard_normal((OUT, HIDDEN)).astype(np.float32), "float32"), "float32")
    return {"norm.weight": (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
            **{f"proj.{name}": array for name, array in arrays.items()}}


def reference(x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """float64 numpy forward pass of the same weights."""
    x = x.astype(np.float64)
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * weights["norm.weight"]
    w = unpack({name.removeprefix("proj."): a for name, a in weights.items() if name.startswith("proj.")}, bits=4)
    return normed @ w.T
