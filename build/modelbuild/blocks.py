"""Weights as a quantized checkpoint holds them: rows cut into groups of 32, integer codes with a scale
(and, for 4 bits, a minimum) per group. A GGUF's Q4_0, Q4_1 and Q8_0 tensors read into these exactly,
so the build can transcode them bit for bit instead of dequantizing and quantizing again:

  4 bits: w = code * scale + minimum, code 0..15   (Q4_1: scale d, minimum m; Q4_0: scale d, minimum -8 d)
  8 bits: w = (code - 128) * scale,  code 0..255   (Q8_0: scale d, code = q + 128)

Scales and minimums are float16 as llama.cpp stores them (float32 where the build quantized a float32
weight for a float32 preset). Rows are in Hugging Face orientation, W[out, in].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP = 32


@dataclass
class Blocks:
    bits: int                     # 4 or 8
    codes: np.ndarray             # uint8 [out, in]
    scale: np.ndarray             # [out, in / 32]
    minimum: np.ndarray | None    # [out, in / 32] for 4 bits, None for 8

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        scale = np.repeat(self.scale.astype(dtype), GROUP, axis=1)
        if self.bits == 8:
            return (self.codes.astype(dtype) - 128) * scale
        return self.codes.astype(dtype) * scale + np.repeat(self.minimum.astype(dtype), GROUP, axis=1)

    def take_rows(self, index: np.ndarray) -> "Blocks":
        return Blocks(self.bits, self.codes[index], self.scale[index],
                      None if self.minimum is None else self.minimum[index])

    @staticmethod
    def concat(parts: list["Blocks"]) -> "Blocks":
        """Row-wise, as fused projections (qkv, gate_up) are; all parts have the same bits."""
        return Blocks(parts[0].bits, np.concatenate([p.codes for p in parts]), np.concatenate([p.scale for p in parts]),
                      None if parts[0].minimum is None else np.concatenate([p.minimum for p in parts]))


# --- llama.cpp's block layouts (ggml-common.h) ------------------------------------------------------
# Q4_0: f16 d, 16 bytes of codes; Q4_1: f16 d, f16 m, 16 bytes; Q8_0: f16 d, 32 int8. In a 4-bit block the
# low nibbles hold elements 0..15 and the high nibbles 16..31.
GGUF_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


def from_gguf(kind: str, raw: np.ndarray, rows: int, columns: int) -> Blocks:
    """One GGUF tensor's bytes (`rows` x `columns` weights) as Blocks; raises ValueError when the bytes
    cannot be what the header says."""
    groups = columns // GROUP
    block = GGUF_BLOCK_BYTES[kind]
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if columns % GROUP or raw.size != rows * groups * block:
        raise ValueError(f"{raw.size} bytes, but {rows} x {columns} weights in {kind} take {rows * groups * block}")
    data = raw.reshape(rows, groups, block)
    half = lambda offset: data[..., offset:offset + 2].copy().view(np.float16)[..., 0]  # noqa: E731
    scale = half(0)
    if kind == "Q8_0":
        codes = (data[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        blocks = Blocks(8, codes.reshape(rows, columns), scale, None)
    else:
        nibbles = data[..., 4:] if kind == "Q4_1" else data[..., 2:]
        codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(rows, columns)
        minimum = half(2) if kind == "Q4_1" else (scale * np.float16(-8)).astype(np.float16)
        blocks = Blocks(4, codes, scale, minimum)
    bad = ~np.isfinite(blocks.scale) | (~np.isfinite(blocks.minimum) if blocks.minimum is not None else False)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of its {kind} blocks have no finite scale")
    return blocks


Weight = np.ndarray | Blocks  # a source tensor: float, or the exact blocks of a quantized checkpoint
