"""Hugging Face Llama-shaped weights (Llama, Mistral, Qwen2, Qwen3, Phi-3) -> this project's parameter
names, written out explicitly.

Q, K and V are concatenated into `qkv_proj` (their biases too, Qwen2's) and gate/up into `gate_up_proj`
(see llama.py): Blocks of one bit width stay Blocks (rows are joined exactly), mixed ones are joined as float.
Every source tensor must be used or listed as unused, so a renamed or extra tensor cannot slip by.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from modelbuild.arch.llama import LlamaConfig
from modelbuild.blocks import Blocks, Weight
from modelbuild.errors import BuildError


def join_rows(parts: list[Weight]) -> Weight:
    if all(isinstance(p, Blocks) for p in parts) and len({p.bits for p in parts}) == 1:
        return Blocks.concat(parts)
    return np.concatenate([p.dequantize() if isinstance(p, Blocks) else p for p in parts], axis=0)


UNUSED_SUFFIXES = ("rotary_emb.inv_freq",)


LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")


def load_params(tensors: Iterator[tuple[str, Weight]], c: LlamaConfig,
                layer_norms: tuple[str, ...] = LAYER_NORMS) -> Iterator[tuple[str, Weight]]:
    source = dict(tensors)
    used: set[str] = set()

    def fused(name: str, parts: list[str]) -> Weight:
        """Phi-3's checkpoints store qkv and gate/up fused already, in this order; the others store the parts."""
        return take(name) if name in source else join_rows([take(part) for part in parts])

    def take(name: str) -> Weight:
        if name not in source:
            raise BuildError(f"the weights have no tensor {name}", "check that the checkpoint is complete and that "
                             "config.json's model_type is the model's")
        used.add(name)
        return source[name]

    yield "model.embed_tokens.weight", take("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        hf, ours = f"model.layers.{i}.", f"model.layers.{i}."
        for norm in layer_norms:
            yield ours + f"{norm}.weight", take(hf + f"{norm}.weight")
        yield ours + "self_attn.qkv_proj.weight", fused(hf + "self_attn.qkv_proj.weight",
                                                        [hf + f"self_attn.{x}_proj.weight" for x in "qkv"])
        if c.attention_bias:
            yield ours + "self_attn.qkv_proj.bias", join_rows([take(hf + f"self_attn.{x}_proj.bias") for x in "qkv"])
        if c.qk_norm:
            yield ours + "self_attn.q_norm.weight", take(hf + "self_attn.q_norm.weight")
            yield ours + "self_attn.k_norm.weight", take(hf + "self_attn.k_norm.weight")
        yield ours + "self_attn.o_proj.weight", take(hf + "self_attn.o_proj.weight")
        yield ours + "mlp.gate_up_proj.weight", fused(hf + "mlp.gate_up_proj.weight",
                                                      [hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"])
        yield ours + "mlp.down_proj.weight", take(hf + "mlp.down_proj.weight")
    yield "model.norm.weight", take("model.norm.weight")
    if c.tie_word_embeddings:
        used.add("lm_head.weight")  # some checkpoints store the tied copy too
    else:
        yield "lm_head.weight", take("lm_head.weight")

    unused = sorted(n for n in source if n not in used and not n.endswith(UNUSED_SUFFIXES))
    if unused:
        raise BuildError(f"the weights have tensors a {c.kwargs.get('model_type', 'Llama')} model does not use: "
                         f"{', '.join(unused[:5])}", "check that config.json's model_type is the model's")
