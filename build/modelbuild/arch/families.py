"""The Llama-shaped families: each one's config.json read into the one LlamaConfig (llama.py), with what
the family adds switched on, and everything this decoder does not implement refused before compiling,
naming the config field and its value."""
from __future__ import annotations

import math
from typing import Any

from modelbuild.arch.gemma import GemmaConfig
from modelbuild.arch.llama import LlamaConfig
from modelbuild.errors import BuildError

ROPE_TYPES = ("default", "llama3", "longrope")  # computed as Hugging Face does (longrope in the graph: llama.py)
EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")


def refuse(field: str, value, why: str) -> BuildError:
    return BuildError(f"config.json sets {field} = {value!r}, {why}", "Seam builds dense Llama, Mistral, Qwen2, "
                      "Qwen3, Phi-3 and Gemma models without it; pick a model whose config does not need it")


def rope(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE's base and scaling, from the keys of older configs (rope_theta, rope_scaling) or of
    transformers 5's (rope_parameters), in transformers' order: a config's rope_scaling replaces its
    rope_parameters, and the parameters' own rope_theta comes before the config's."""
    parameters = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    kind = "longrope" if kind == "su" else kind  # Phi-3's first name for it
    partial = parameters.get("partial_rotary_factor") or hf.get("partial_rotary_factor") or 1.0
    if partial != 1.0:
        raise refuse("partial_rotary_factor", partial, "RoPE over part of each head only")
    if kind not in ROPE_TYPES:
        raise refuse("rope_scaling.rope_type", kind,
                     f"a RoPE type this decoder does not implement ({', '.join(ROPE_TYPES)} only)")
    scaling = None if kind == "default" else \
        {**{k: v for k, v in parameters.items() if k not in ("rope_theta", "type")}, "rope_type": kind}
    if kind == "longrope":
        scaling = longrope(hf, scaling)
    return {"rope_theta": parameters.get("rope_theta") or hf.get("rope_theta") or 10000.0, "rope_scaling": scaling}


def longrope(hf: dict[str, Any], scaling: dict[str, Any]) -> dict[str, Any]:
    """Phi-3's LongRoPE in one form (llama.py's rope_frequencies reads it): the attention factor follows from
    the ratio of max_position_embeddings to original_max_position_embeddings, so an explicit `factor` becomes
    that ratio. The context stops at the original length (dense() caps it), where only the short factors apply,
    so the long ones are kept but never used."""
    original = scaling.get("original_max_position_embeddings") or hf.get("original_max_position_embeddings") \
        or hf["max_position_embeddings"]
    factor = scaling.get("factor") or hf["max_position_embeddings"] / original
    implied = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
    if abs((scaling.get("attention_factor") or implied) - implied) > 1e-6:
        raise refuse("rope_scaling.attention_factor", scaling["attention_factor"],
                     f"an attention factor other than LongRoPE's own ({implied:.6f} here)")
    return {"rope_type": "longrope", "long_factor": list(scaling["long_factor"]),
            "short_factor": list(scaling["short_factor"]), "original_max_position_embeddings": original,
            "max_position_embeddings": original * factor}


def dense(hf: dict[str, Any], config_class=LlamaConfig, activation: str = "silu", **family) -> LlamaConfig:
    for field in EXPERT_FIELDS:
        if hf.get(field):
            raise refuse(field, hf[field], "a mixture of experts")
    for field in ("hidden_act", "hidden_activation"):
        if hf.get(field, activation) != activation:
            raise refuse(field, hf[field], f"an activation this family's decoder does not have ({activation} only)")
    if hf.get("mlp_bias"):
        raise refuse("mlp_bias", hf["mlp_bias"], "biases in the MLP, which this decoder does not have")
    config = {**hf, **rope(hf), **family}
    limits = [hf.get("context_window_size") or 4096, hf.get("max_position_embeddings", 2048)]
    if hf.get("use_sliding_window") is not False and hf.get("sliding_window"):
        limits.append(hf["sliding_window"])  # attention within a window as long as the context is plain attention
    if (config["rope_scaling"] or {}).get("rope_type") == "longrope":
        limits.append(config["rope_scaling"]["original_max_position_embeddings"])
    config["context_window_size"] = min(limits)
    return config_class.from_dict(config)


def llama(hf: dict[str, Any]) -> LlamaConfig:
    if hf.get("attention_bias"):  # Llama's puts a bias on o_proj too
        raise refuse("attention_bias", hf["attention_bias"], "biases on all four attention projections")
    return dense(hf)


def qwen2(hf: dict[str, Any]) -> LlamaConfig:
    return dense(hf, attention_bias=True)  # q, k and v have biases, o does not


def qwen3(hf: dict[str, Any]) -> LlamaConfig:
    if hf.get("attention_bias"):
        raise refuse("attention_bias", hf["attention_bias"], "biases on all four attention projections")
    return dense(hf, qk_norm=True)


def phi3(hf: dict[str, Any]) -> LlamaConfig:
    return dense(hf)  # Llama's layers; its checkpoint fuses qkv and gate/up already (llama_loader.py)


def gemma2(hf: dict[str, Any]) -> GemmaConfig:
    return gemma(hf, qk_norm=False)


def gemma3_text(hf: dict[str, Any]) -> GemmaConfig:
    return gemma(hf, qk_norm=True)


def gemma(hf: dict[str, Any], qk_norm: bool) -> GemmaConfig:
    if hf.get("attn_logit_softcapping"):
        raise refuse("attn_logit_softcapping", hf["attn_logit_softcapping"], "soft-capped attention scores, which "
                     "TVM 0.27's attention kernels cannot compute")
    if hf.get("use_bidirectional_attention"):
        raise refuse("use_bidirectional_attention", True, "attention that looks ahead")
    config = dense({**hf, "rope_parameters": None, "rope_scaling": None}, GemmaConfig, "gelu_pytorch_tanh",
                   qk_norm=qk_norm, tie_word_embeddings=True, rope_per_layer=gemma_layer_rope(hf))
    config.query_pre_attn_scalar = config.query_pre_attn_scalar or config.head_dim
    return config


def gemma_layer_rope(hf: dict[str, Any]) -> list[list[float]]:
    """Each layer's RoPE [base, linear factor]: Gemma 3's sliding (local) and full (global) layers have their
    own, under transformers 5's rope_parameters per layer type or the older rope_theta / rope_local_base_freq /
    rope_scaling; Gemma 2's layers share one."""
    layers, every = hf["num_hidden_layers"], hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern", 2)
    types = hf.get("layer_types") or \
        ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(layers)]
    parameters = hf.get("rope_parameters") or {}
    if "full_attention" not in parameters:
        full = {"rope_theta": hf.get("rope_theta") or parameters.get("rope_theta", 10000.0),
                **(hf.get("rope_scaling") or parameters)}
        parameters = {"full_attention": full,
                      "sliding_attention": {"rope_theta": hf.get("rope_local_base_freq", full["rope_theta"])}}
    out = []
    for kind in types:
        p = parameters[kind] or {}
        rope_type = p.get("rope_type", p.get("type", "default"))
        if rope_type not in ("default", "linear"):
            raise refuse(f"rope_parameters.{kind}.rope_type", rope_type, "a RoPE type Gemma's layers here do not "
                         "implement (default, linear only)")
        out.append([float(p.get("rope_theta", 10000.0)), float(p.get("factor", 1.0)) if rope_type == "linear" else 1.0])
    return out
