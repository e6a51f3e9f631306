"""The toolchain self-test's model: RMSNorm, then a 4-bit group-quantized Linear, dynamic sequence length.

Small, but it exercises what every real model needs from the chain: a reduction kernel, the fused
dequantize-matmul over packed uint32 weights, a symbolic shape, and the parameters passed from JS.
"""
from __future__ import annotations

import numpy as np
from tvm.relax.frontend import nn

from modelbuild.quantization.group_quant import GroupQuant, GroupQuantLinear, dequantize_weight, quantize_weight

HIDDEN, OUT = 128, 96
EPS = 1e-5
Q4F32 = GroupQuant("q4f32_1")


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
    packed, scale = quantize_weight(0.1 * rng.standard_normal((OUT, HIDDEN)).astype(np.float32), Q4F32)
    return {"norm.weight": (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
            "proj.q_weight": packed, "proj.q_scale": scale}


def reference(x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """float64 numpy forward pass of the same weights."""
    x = x.astype(np.float64)
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * weights["norm.weight"]
    w = dequantize_weight(weights["proj.q_weight"], weights["proj.q_scale"], Q4F32).astype(np.float64)
    return normed @ w.T
