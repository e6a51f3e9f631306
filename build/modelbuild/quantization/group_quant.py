"""Group quantization with a minimum: the `q4f*_1` presets' weight format.

Each row of a weight W[out, in] is cut into groups of 32 values along `in`. A group holds 4-bit codes
with a scale and a minimum, `w = code * scale + minimum` (code 0..15): exactly llama.cpp's Q4_1, and
Q4_0 too (minimum = -8 * scale), so a GGUF in those types is transcoded bit for bit. A tensor the source
holds in 8 bits (Q8_0) stays in 8 bits, `w = (code - 128) * scale`. Float sources are quantized here,
choosing scale and minimum to lower each group's squared error.

The packed layout (written down in models/README.md) puts neighbouring output columns next to each
other, so the GPU invocations that compute neighbouring outputs read neighbouring 32-bit words:
  q_weight  uint32 [in / codes_per_word, out]   word (kw, o) holds codes k = kw*n .. kw*n + n-1 of column o,
                                                 the first in the lowest bits (n = 8 for 4 bits, 4 for 8)
  q_scale   [in / 32, out] in the model dtype    (float32 presets widen llama.cpp's float16 exactly)
  q_min     [in / 32, out], 4 bits only
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from modelbuild.blocks import GROUP, Blocks


@dataclass(frozen=True)
class GroupQuant:
    """A preset: 4-bit weights in groups of 32, scales and activations in `model_dtype`."""
    name: str
    bits: int = 4
    group_size: int = GROUP
    model_dtype: str = "float32"


@dataclass(frozen=True)
class WeightFormat:
    """How one quantized weight is stored: 4 bits with a minimum, or 8 bits (where the source had 8)."""
    bits: int
    dtype: str  # of scales, minimums and the dequantized values

    @property
    def per_word(self) -> int:  # codes per uint32
        return 32 // self.bits

    @property
    def has_min(self) -> bool:
        return self.bits == 4


# --- numpy: quantize, pack, unpack ------------------------------------------------------------------

def quantize_with_min(w: np.ndarray, dtype: str, steps: int = 20) -> Blocks:
    """Float W[out, in] -> 4-bit Blocks. For each group, candidate scales around (max - min) / 15 are tried
    (as llama.cpp's make_qkx2_quants does); for each, the codes are rounded and scale and minimum refit by
    least squares; the candidate with the lowest squared error wins. Scale and minimum are then rounded to
    `dtype` and the codes chosen again against the rounded values."""
    out_dim, in_dim = w.shape
    if in_dim % GROUP:
        raise ValueError(f"input dimension {in_dim} is not a multiple of the group size {GROUP}")
    x = w.astype(np.float64).reshape(-1, GROUP)
    low, high = x.min(1, keepdims=True), x.max(1, keepdims=True)
    spread = np.where(high > low, high - low, 1.0)
    best_scale, best_min, best_err = spread / 15, low, np.full((x.shape[0], 1), np.inf)
    n = GROUP
    for i in range(steps + 1):
        inverse = (15 - 1 + 0.1 * i) / spread  # llama.cpp's rmin = -1, rdelta = 0.1
        codes = np.clip(np.round((x - low) * inverse), 0, 15)
        sum_l, sum_ll = codes.sum(1, keepdims=True), (codes * codes).sum(1, keepdims=True)
        sum_x, sum_lx = x.sum(1, keepdims=True), (codes * x).sum(1, keepdims=True)
        det = n * sum_ll - sum_l * sum_l
        safe = np.where(det > 0, det, 1.0)
        scale = np.where(det > 0, (n * sum_lx - sum_l * sum_x) / safe, 0.0)
        minimum = np.where(det > 0, (sum_ll * sum_x - sum_l * sum_lx) / safe, sum_x / n)
        err = ((codes * scale + minimum - x) ** 2).sum(1, keepdims=True)
        better = err < best_err
        best_scale, best_min, best_err = (np.where(better, scale, best_scale), np.where(better, minimum, best_min),
                                          np.where(better, err, best_err))
    scale = best_scale.astype(dtype).astype(np.float64)
    minimum = best_min.astype(dtype).astype(np.float64)
    codes = np.clip(np.round((x - minimum) / np.where(scale != 0, scale, 1.0)), 0, 15)
    groups = (out_dim, in_dim // GROUP)
    return Blocks(4, codes.astype(np.uint8).reshape(out_dim, in_dim), scale.astype(dtype).reshape(groups),
                  minimum.astype(dtype).reshape(groups))


def pack(blocks: Blocks, dtype: str) -> dict[str, np.ndarray]:
    """Blocks -> the parameter arrays of the layout above (suffixes q_weight, q_scale, q_min)."""
    fmt = WeightFormat(blocks.bits, dtype)
    out_dim, in_dim = blocks.shape
    codes = blocks.codes.astype(np.uint32).reshape(out_dim, in_dim // fmt.per_word, fmt.per_word)
    words = np.zeros(codes.shape[:2], np.uint32)
    for i in range(fmt.per_word):
        words |= codes[..., i] << np.uint32(fmt.bits * i)
    arrays = {"q_weight": np.ascontiguousarray(words.T), "q_scale": np.ascontiguousarray(blocks.scale.astype(dtype).T)}
    if fmt.has_min:
        arrays["q_min"] = np.ascontiguousarray(blocks.minimum.astype(dtype).T)
    return arrays


def unpack(arrays: dict[str, np.ndarray], bits: int) -> np.ndarray:
    """The numpy reference of what the kernels compute: packed arrays -> W[out, in] in float64."""
    fmt = WeightFormat(bits, str(arrays["q_scale"].dtype))
    words = arrays["q_weight"].T  # [out, in / per_word]
    shifts = np.arange(fmt.per_word, dtype=np.uint32) * np.uint32(bits)
    codes = ((words[..., None] >> shifts) & np.uint32((1 << bits) - 1)).reshape(words.shape[0], -1)
    minimum = arrays["q_min"].T if fmt.has_min else None
    return Blocks(bits, codes, arrays["q_scale"].T, minimum).dequantize(np.float64)


# --- TVM: the compiled model's view of the same arrays ------------------------------------------------

def weight_te(packed: te.Tensor, scale: te.Tensor, minimum: te.Tensor | None, fmt: WeightFormat,
              rows: te.Tensor | None = None) -> te.Tensor:
    """W[o, k] dequantized from the packed layout (or, with `rows`, W[rows[t], k]: the embedding lookup)."""
    mask = tirx.const((1 << fmt.bits) - 1, "uint32")
    in_dim = packed.shape[0] * fmt.per_word

    def value(o, k):
        column = rows[o] if rows is not None else o
        word = packed[k // fmt.per_word, column]
        code = (word >> (tirx.Cast("uint32", k % fmt.per_word) * tirx.const(fmt.bits, "uint32"))) & mask
        s = scale[k // GROUP, column]
        if fmt.has_min:
            return code.astype(fmt.dtype) * s + minimum[k // GROUP, column]
        return (code.astype(fmt.dtype) - tirx.const(128, fmt.dtype)) * s

    extent = rows.shape[0] if rows is not None else packed.shape[1]
    return te.compute((extent, in_dim), value, name="dequantize_embedding" if rows is not None else "dequantize")


def dequantize_matmul_te(x: te.Tensor, packed: te.Tensor, scale: te.Tensor, minimum: te.Tensor | None,
                         fmt: WeightFormat) -> te.Tensor:
    """`x @ W.T` as one kernel: the dequantize stays a separate block inside it, so a schedule can decode
    each packed word once into registers and use it for every row (prefill) or inline it (decode)."""
    *lead, in_dim = x.shape
    w = weight_te(packed, scale, minimum, fmt)
    k = te.reduce_axis((0, in_dim), name="k")

    def body(*idx):
        row, o = idx[:-1], idx[-1]
        return te.sum(x[(*row, k)] * w[o, k], axis=k)

    return te.compute((*lead, packed.shape[1]), body, name="dequantize_matmul")


def dequantize_gemv_te(x: te.Tensor, packed: te.Tensor, scale: te.Tensor, minimum: te.Tensor | None,
                       fmt: WeightFormat) -> te.Tensor:
    """Decode's `x[1, 1, K] @ W.T` for CPUs, with the scale and minimum taken out of the sum over a group:
        sum_k x[k] * w[o, k] = sum_g scale[g, o] * sum_j x[k] * code[o, k] + minimum[g, o] * sum_j x[k]
    (k = 32 g + j). The sums of x per group are shared by every column. A code is not shifted down to
    its place: it is masked where it lies in the word (code * 2^(bits * i)) and x is scaled by 2^-(bits * i)
    instead, once per k; both factors are exact powers of two. So a weight costs a mask, a conversion, a
    multiply and an add, not seven operations. (The top code is shifted down: masked in place it would
    not fit a signed int.) Float32 only: float16 cannot hold x * 2^-24."""
    *lead, in_dim = x.shape
    per, bits, dtype = fmt.per_word, fmt.bits, fmt.dtype
    top = per - 1

    def place(i):  # as a uint32 shift
        return tirx.Cast("uint32", i) * tirx.const(bits, "uint32")

    def unplace(i):  # 2^-(bits * i) for the codes masked in place, 1 for the top one
        power = tirx.Cast(dtype, tirx.const(1, "uint32") << place(i))
        return tirx.Select(i == top, tirx.const(1.0, dtype), tirx.const(1.0, dtype) / power)

    def code_in_place(word, i):
        masked = word & (tirx.const((1 << bits) - 1, "uint32") << place(i))
        shifted = word >> tirx.const(bits * top, "uint32")
        return tirx.Cast(dtype, tirx.Cast("int32", tirx.Select(i == top, shifted, masked)))

    x_in_place = te.compute(x.shape, lambda *i: x[i] * unplace(i[-1] % per), name="x_in_place")
    j = te.reduce_axis((0, GROUP), name="j")
    x_group_sum = te.compute((*lead, in_dim // GROUP), lambda *i: te.sum(x[(*i[:-1], i[-1] * GROUP + j)], axis=j),
                             name="x_group_sum")

    def dot(*idx):
        row, g, o = idx[:-2], idx[-2], idx[-1]
        k = g * GROUP + j
        return te.sum(x_in_place[(*row, k)] * code_in_place(packed[k // per, o], k % per), axis=j)

    group_dot = te.compute((*lead, in_dim // GROUP, packed.shape[1]), dot, name="group_dot")
    g = te.reduce_axis((0, in_dim // GROUP), name="g")

    def body(*idx):
        row, o = idx[:-1], idx[-1]
        offset = minimum[g, o] if fmt.has_min else scale[g, o] * tirx.const(-128.0, dtype)
        return te.sum(group_dot[(*row, g, o)] * scale[g, o] + offset * x_group_sum[(*row, g)], axis=g)

    return te.compute((*lead, packed.shape[1]), body, name="dequantize_gemv")


class _Quantized(nn.Module):
    """The parameters of one quantized weight W[out, in] in the packed layout. `cpu`: the model is
    compiled for a CPU, where decode's matrix-vector product takes dequantize_gemv_te's form."""

    def __init__(self, out_features: int, in_features: int, fmt: WeightFormat, cpu: bool = False):
        self.fmt, self.cpu = fmt, cpu
        self.q_weight = nn.Parameter((in_features // fmt.per_word, out_features), "uint32")
        self.q_scale = nn.Parameter((in_features // GROUP, out_features), fmt.dtype)
        if fmt.has_min:
            self.q_min = nn.Parameter((in_features // GROUP, out_features), fmt.dtype)

    def to(self, dtype=None) -> None:
        """No-op: the preset fixed these dtypes (a cast would turn the packed codes into floats)."""

    def _arrays(self) -> list[nn.Tensor]:
        return [self.q_weight, self.q_scale] + ([self.q_min] if self.fmt.has_min else [])

    def _matmul(self, x: nn.Tensor) -> nn.Tensor:
        fmt = self.fmt
        one_row = all(isinstance(d, int) and d == 1 for d in x.shape[:-1])
        compute = dequantize_gemv_te if self.cpu and one_row and fmt.dtype == "float32" else dequantize_matmul_te
        return op.tensor_expr_op(lambda x, w, s, *m: compute(x, w, s, m[0] if m else None, fmt),
                                 compute.__name__.removesuffix("_te"), [x, *self._arrays()])


class GroupQuantLinear(_Quantized):
    """A Linear whose weight is stored group-quantized and dequantized inside the matmul; its bias, if it
    has one (Qwen2's q, k and v), stays in the model's float type."""

    def __init__(self, in_features: int, out_features: int, fmt: WeightFormat, bias: bool = False,
                 cpu: bool = False):
        super().__init__(out_features, in_features, fmt, cpu)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter((out_features,), fmt.dtype) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = self._matmul(x)
        return out + self.bias if self.bias is not None else out


class GroupQuantEmbedding(_Quantized):
    """A quantized embedding table; with tied weights it is also the LM head (`lm_head_forward`)."""

    def __init__(self, num: int, dim: int, fmt: WeightFormat, cpu: bool = False):
        super().__init__(num, dim, fmt, cpu)

    def forward(self, ids: nn.Tensor) -> nn.Tensor:
        fmt = self.fmt
        return op.tensor_expr_op(lambda i, w, s, *m: weight_te(w, s, m[0] if m else None, fmt, rows=i),
                                 "dequantize_embedding", [ids, *self._arrays()])

    def lm_head_forward(self, x: nn.Tensor) -> nn.Tensor:
        return self._matmul(x)
