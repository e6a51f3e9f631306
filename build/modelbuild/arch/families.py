"""The Llama-shaped families: each one's config.json read into the one LlamaConfig (llama.py), with what
the family adds switched on, and everything this decoder does not implement refused before compiling,
naming the config field and its value."""
from __future__ import annotations

from typing import Any

from modelbuild.arch.llama import LlamaConfig
from modelbuild.errors import BuildError

ROPE_TYPES = ("default", "llama3")  # TVM's KV cache computes these exactly as Hugging Face does
EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")


def refuse(field: str, value, why: str) -> BuildError:
    return BuildError(f"config.json sets {field} = {value!r}, {why}", "Seam builds dense Llama, Mistral, Qwen2 and "
                      "Qwen3 models without it; pick a model whose config does not need it")


def rope(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE's base and scaling, from the keys of older configs (rope_theta, rope_scaling) or of
    transformers 5's (rope_parameters)."""
    parameters = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise refuse("rope_scaling.rope_type", kind,
                     f"a RoPE type this decoder does not implement ({', '.join(ROPE_TYPES)} only)")
    scaling = None if kind == "default" else \
        {**{k: v for k, v in parameters.items() if k != "rope_theta"}, "rope_type": kind}
    return {"rope_theta": hf.get("rope_theta") or parameters.get("rope_theta", 10000.0), "rope_scaling": scaling}


def dense(hf: dict[str, Any], **family) -> LlamaConfig:
    for field in EXPERT_FIELDS:
        if hf.get(field):
            raise refuse(field, hf[field], "a mixture of experts")
    if hf.get("hidden_act", "silu") != "silu":
        raise refuse("hidden_act", hf["hidden_act"], "an activation this decoder does not implement (silu only)")
    if hf.get("mlp_bias"):
        raise refuse("mlp_bias", hf["mlp_bias"], "biases in the MLP, which this decoder does not have")
    config = {**hf, **rope(hf), **family}
    window = hf.get("sliding_window") if hf.get("use_sliding_window") is not False else None
    if window:  # attention within a window as long as the whole context is plain attention
        config["context_window_size"] = min(hf.get("max_position_embeddings", 2048), 4096, window)
    return LlamaConfig.from_dict(config)


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
