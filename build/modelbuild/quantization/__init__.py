"""Quantization presets, as data plus one pass.

A preset name (MLC's naming: `q{bits}f{float bits}_{variant}`) resolves to a frozen config. `quantize_model`
swaps the model's Linear and Embedding modules for quantized ones, and `quantize_params` turns float32
weights (named as in the float model) into the arrays the quantized model's parameters expect.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from tvm.relax.frontend import nn

from modelbuild.errors import BuildError
from modelbuild.quantization.group_quant import GroupQuant, GroupQuantEmbedding, GroupQuantLinear, quantize_weight


@dataclass(frozen=True)
class NoQuant:
    """Unquantized weights, kept as the reference preset."""
    name: str
    model_dtype: str = "float32"


PRESETS: dict[str, NoQuant | GroupQuant] = {
    "q0f32": NoQuant("q0f32", model_dtype="float32"),
    "q4f32_1": GroupQuant("q4f32_1", bits=4, group_size=32, model_dtype="float32"),
    "q4f16_1": GroupQuant("q4f16_1", bits=4, group_size=32, model_dtype="float16"),
}
# WebGPU features a preset's kernels need from the adapter.
REQUIRED_FEATURES = {"q0f32": [], "q4f32_1": [], "q4f16_1": ["shader-f16"]}


def get_preset(name: str) -> NoQuant | GroupQuant:
    if name not in PRESETS:
        raise BuildError(f"unknown quantization preset {name!r}", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def quantize_model(model: nn.Module, preset: NoQuant | GroupQuant) -> nn.Module:
    """Swap every Linear and Embedding for its quantized form, in place; cast the rest to the model dtype."""
    if isinstance(preset, GroupQuant):
        class Swap(nn.Mutator):
            def visit_module(self, name, node):
                if isinstance(node, nn.Linear):
                    return GroupQuantLinear(node.in_features, node.out_features, preset)
                if isinstance(node, nn.Embedding):
                    return GroupQuantEmbedding(node.num, node.dim, preset)
                return self.visit(name, node)

        model = Swap().visit("", model)
    model.to(preset.model_dtype)
    return model


def quantize_params(weights: Iterator[tuple[str, np.ndarray]], quantized_names: set[str],
                    preset: NoQuant | GroupQuant) -> Iterator[tuple[str, np.ndarray]]:
    """Float32 weights named as in the float model -> arrays named as in the quantized model."""
    for name, w in weights:
        base = name.removesuffix(".weight")
        if isinstance(preset, GroupQuant) and f"{base}.q_weight" in quantized_names:
            packed, scale = quantize_weight(w, preset)
            yield f"{base}.q_weight", packed
            yield f"{base}.q_scale", scale
        else:
            yield name, w.astype(preset.model_dtype)
