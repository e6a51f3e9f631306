"""Quantization presets, as data plus one pass.

A preset name (MLC's naming: `q{bits}f{float bits}_{variant}`) resolves to a frozen config. `quantize_model`
swaps the model's Linear and Embedding modules for quantized ones, and `quantize_params` turns the source's
weights (float arrays, or the Blocks a quantized checkpoint holds, named as in the float model) into the
arrays the quantized model's parameters expect. The formats are in group_quant.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from tvm.relax.frontend import nn

from modelbuild.errors import BuildError
from modelbuild.blocks import Blocks, Weight
from modelbuild.quantization.group_quant import (GroupQuant, GroupQuantEmbedding, GroupQuantLinear, WeightFormat, pack,
                                                 quantize_with_min)


@dataclass(frozen=True)
class NoQuant:
    """Unquantized weights, kept as the reference preset."""
    name: str
    model_dtype: str = "float32"


PRESETS: dict[str, NoQuant | GroupQuant] = {
    "q0f32": NoQuant("q0f32", model_dtype="float32"),
    "q4f32_1": GroupQuant("q4f32_1", bits=4, model_dtype="float32"),
    "q4f16_1": GroupQuant("q4f16_1", bits=4, model_dtype="float16"),
}
# WebGPU features a preset's kernels need from the adapter.
REQUIRED_FEATURES = {"q0f32": [], "q4f32_1": [], "q4f16_1": ["shader-f16"]}


def get_preset(name: str) -> NoQuant | GroupQuant:
    if name not in PRESETS:
        raise BuildError(f"unknown quantization preset {name!r}", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def eight_bit_modules(weights: dict[str, Weight]) -> set[str]:
    """The modules whose weight the source holds in 8 bits: a 4-bit preset keeps them in 8 bits."""
    return {name.removesuffix(".weight") for name, w in weights.items() if isinstance(w, Blocks) and w.bits == 8}


def quantize_model(model: nn.Module, preset: NoQuant | GroupQuant, eight_bit: set[str] = frozenset(),
                   cpu: bool = False) -> nn.Module:
    """Swap every Linear and Embedding for its quantized form, in place; cast the rest to the model dtype.
    `cpu`: the model is compiled for a CPU (group_quant.dequantize_gemv_te)."""
    if isinstance(preset, GroupQuant):
        def fmt(name: str) -> WeightFormat:
            return WeightFormat(8 if name in eight_bit else preset.bits, preset.model_dtype)

        class Swap(nn.Mutator):
            def visit_module(self, name, node):
                if isinstance(node, nn.Linear):
                    return GroupQuantLinear(node.in_features, node.out_features, fmt(name), node.bias is not None, cpu)
                if isinstance(node, nn.Embedding):
                    return GroupQuantEmbedding(node.num, node.dim, fmt(name), cpu)
                return self.visit(name, node)

        model = Swap().visit("", model)
    model.to(preset.model_dtype)
    return model


def quantize_params(weights: Iterator[tuple[str, Weight]], quantized_names: set[str],
                    preset: NoQuant | GroupQuant) -> Iterator[tuple[str, np.ndarray]]:
    """Source weights named as in the float model -> arrays named as in the quantized model. Blocks are
    transcoded exactly; float weights are quantized (with a minimum) only where the model wants them so."""
    for name, w in weights:
        base = name.removesuffix(".weight")
        if isinstance(preset, GroupQuant) and f"{base}.q_weight" in quantized_names:
            blocks = w if isinstance(w, Blocks) else quantize_with_min(w, preset.model_dtype)
            for suffix, array in pack(blocks, preset.model_dtype).items():
                yield f"{base}.{suffix}", array
        else:
            yield name, (w.dequantize() if isinstance(w, Blocks) else w).astype(preset.model_dtype)
