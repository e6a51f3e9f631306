"""Symmetric group quantization, MLC's `q4f*_1` layout.

Each row of a weight `W[out, in]` is cut into groups of `group_size` values that share one scale
`s = max|w| / 7`. A value is stored as the 4-bit code `q = round(w / s) + 7` (0..14), eight codes
packed little-end-first into one uint32. Dequantized: `w = (q - 7) * s`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op


@dataclass(frozen=True)
class GroupQuant:
    name: str
    bits: int = 4
    group_size: int = 32
    model_dtype: str = "float32"  # scales and activations

    @property
    def per_word(self) -> int:  # codes per uint32
        return 32 // self.bits

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1


def quantize_weight(w: np.ndarray, q: GroupQuant) -> tuple[np.ndarray, np.ndarray]:
    """W[out, in] -> (packed uint32 [out, in / per_word], scale [out, in / group_size])."""
    out_dim, in_dim = w.shape
    if in_dim % q.group_size:
        raise ValueError(f"input dimension {in_dim} is not a multiple of the group size {q.group_size}")
    groups = w.astype(np.float32).reshape(out_dim, in_dim // q.group_size, q.group_size)
    scale = np.abs(groups).max(axis=-1) / q.max_int
    scale = scale.astype(q.model_dtype)
    safe = np.where(scale == 0, 1, scale).astype(np.float32)[..., None]
    codes = np.clip(np.round(groups / safe) + q.max_int, 0, 2 * q.max_int).astype(np.uint32)
    codes = codes.reshape(out_dim, in_dim // q.per_word, q.per_word)
    packed = np.zeros(codes.shape[:2], np.uint32)
    for i in range(q.per_word):
        packed |= codes[..., i] << np.uint32(q.bits * i)
    return packed, scale


def dequantize_weight(packed: np.ndarray, scale: np.ndarray, q: GroupQuant) -> np.ndarray:
    """The numpy reference of what the GPU kernels compute, in float32."""
    shifts = np.arange(q.per_word, dtype=np.uint32) * np.uint32(q.bits)
    codes = (packed[..., None] >> shifts) & np.uint32((1 << q.bits) - 1)
    codes = codes.reshape(packed.shape[0], -1).astype(np.float32) - q.max_int
    return codes * np.repeat(scale.astype(np.float32), q.group_size, axis=1)


def dequantize_te(packed: te.Tensor, scale: te.Tensor, q: GroupQuant) -> te.Tensor:
    """The float weight W[out, in] from its packed codes and group scales."""
    mask = tirx.const((1 << q.bits) - 1, "uint32")

    def value(o, k):
        word = packed[o, k // q.per_word]
        code = (word >> (tirx.Cast("uint32", k % q.per_word) * tirx.const(q.bits, "uint32"))) & mask
        return (code.astype(q.model_dtype) - tirx.const(q.max_int, q.model_dtype)) * scale[o, k // q.group_size]

    return te.compute((packed.shape[0], packed.shape[1] * q.per_word), value, name="dequantize")


def dequantize_matmul_te(x: te.Tensor, packed: te.Tensor, scale: te.Tensor, q: GroupQuant) -> te.Tensor:
    """`x @ dequantize(W).T` as one kernel: the dequantize stays a separate block inside it, so a
    schedule can inline it into the loads (GEMV) or dequantize a tile into registers once (prefill)."""
    *lead, in_dim = x.shape
    w = dequantize_te(packed, scale, q)
    k = te.reduce_axis((0, in_dim), name="k")

    def body(*idx):
        row, o = idx[:-1], idx[-1]
        return te.sum(x[(*row, k)] * w[o, k], axis=k)

    return te.compute((*lead, packed.shape[0]), body, name="dequantize_matmul")


class GroupQuantLinear(nn.Module):
    """A bias-free Linear whose weight is stored group-quantized and dequantized inside the matmul."""

    def __init__(self, in_features: int, out_features: int, q: GroupQuant):
        self.q = q
        self.in_features, self.out_features = in_features, out_features
        self.q_weight = nn.Parameter((out_features, in_features // q.per_word), "uint32")
        self.q_scale = nn.Parameter((out_features, in_features // q.group_size), q.model_dtype)

    def to(self, dtype=None) -> None:
        """No-op: the preset fixed these dtypes (a cast would turn the packed codes into floats)."""

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return op.tensor_expr_op(lambda x, w, s: dequantize_matmul_te(x, w, s, self.q), "dequantize_matmul",
                                 [x, self.q_weight, self.q_scale])


def dequantize_rows_te(packed: te.Tensor, scale: te.Tensor, ids: te.Tensor, q: GroupQuant) -> te.Tensor:
    """Gather rows `ids` of a quantized table and dequantize them: the embedding lookup."""
    mask = tirx.const((1 << q.bits) - 1, "uint32")
    hidden = packed.shape[1] * q.per_word

    def value(t, d):
        word = packed[ids[t], d // q.per_word]
        code = (word >> (tirx.Cast("uint32", d % q.per_word) * tirx.const(q.bits, "uint32"))) & mask
        return (code.astype(q.model_dtype) - tirx.const(q.max_int, q.model_dtype)) * scale[ids[t], d // q.group_size]

    return te.compute((ids.shape[0], hidden), value, name="dequantize_embedding")


class GroupQuantEmbedding(nn.Module):
    """A quantized embedding table; with tied weights it is also the LM head (`lm_head_forward`)."""

    def __init__(self, num: int, dim: int, q: GroupQuant):
        self.q = q
        self.q_weight = nn.Parameter((num, dim // q.per_word), "uint32")
        self.q_scale = nn.Parameter((num, dim // q.group_size), q.model_dtype)

    def to(self, dtype=None) -> None:
        """No-op: the preset fixed these dtypes."""

    def forward(self, ids: nn.Tensor) -> nn.Tensor:
        return op.tensor_expr_op(lambda w, s, i: dequantize_rows_te(w, s, i, self.q), "dequantize_embedding",
                                 [self.q_weight, self.q_scale, ids])

    def lm_head_forward(self, x: nn.Tensor) -> nn.Tensor:
        return op.tensor_expr_op(lambda x, w, s: dequantize_matmul_te(x, w, s, self.q), "dequantize_matmul",
                                 [x, self.q_weight, self.q_scale])
