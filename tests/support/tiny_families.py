"""Tiny random checkpoints of the Llama-shaped families (Llama 3.x, Mistral, Qwen2/2.5, Qwen3, Phi-3), written by
transformers itself from a config with the family's own features, with the real SmolLM2 tokenizer, and
built by our pipeline under $SEAM_CACHE/tests/tiny/families (incrementally: the same bytes each time)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from modelbuild import pipeline, source
from tests.support.models import TINY_DIR

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "vocab_size": 49152,
        "prefill_chunk_size": 16}  # small, so a test prompt spans several prefill chunks
# Each family as its own checkpoints configure it (at a tiny size): what differs is what is tested.
FAMILIES = {
    "llama3": ("llama", {"tie_word_embeddings": True, "rope_theta": 500000.0,  # Llama 3.2 1B's shape
                         "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "mistral": ("mistral", {"tie_word_embeddings": False, "sliding_window": 512}),
    "qwen2": ("qwen2", {"tie_word_embeddings": True, "rope_theta": 1000000.0}),   # Qwen2.5 0.5B's shape
    "qwen3": ("qwen3", {"tie_word_embeddings": True, "head_dim": 64}),            # head_dim x heads != hidden
    "phi3": ("phi3", {"tie_word_embeddings": False, "original_max_position_embeddings": 512,  # Phi-3.5 mini's
                      "rope_scaling": {"type": "longrope", "long_factor": [1.0 + i for i in range(8)],
                                       "short_factor": [1.0 + 0.3 * i for i in range(8)]}}),
    "gemma3": ("gemma3_text", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512,  # Gemma 3 4B's
               "num_hidden_layers": 6, "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
               "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                   "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}}),
    "gemma2": ("gemma2", {"head_dim": 16, "query_pre_attn_scalar": 16, "final_logit_softcapping": 3.0,
                          "attn_logit_softcapping": None, "sliding_window": 512}),  # real Gemma 2s cap scores too
}
PRESETS = ("q0f32", "q4f32_1", "q4f16_1")


def write_family(name: str) -> tuple[Path, "torch.nn.Module"]:
    """The checkpoint folder, and transformers' model of it (the reference)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    model_type, extra = FAMILIES[name]
    folder = TINY_DIR / "families" / name
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **{**TINY, **copy.deepcopy(extra)})  # it adds to the dicts it is given
    model = AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # larger than the default init, so the logits spread and a wrong piece shows
        for parameter in model.parameters():
            parameter.normal_(0, 0.2) if parameter.dim() > 1 else parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    real = source.open_source(source.default_model_path())
    (folder / "tokenizer.json").write_text(real.tokenizer_json)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": real.chat_template}))
    return folder, model


def build_family(name: str, presets=PRESETS) -> tuple["torch.nn.Module", Path]:
    """transformers' model of the family's checkpoint, and the models folder our pipeline built from it."""
    folder, model = write_family(name)
    out = TINY_DIR / "families" / f"{name}-models"
    pipeline.build(pipeline.BuildOptions(model=folder, presets=list(presets), out_dir=out, wasm_opt="-O1", shard_mb=1))
    return model, out


GGUF_ARCH = {"llama3": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
             "gemma3": "gemma3", "gemma2": "gemma2"}


def write_family_gguf(name: str) -> Path:
    """The family's checkpoint as llama.cpp's converter writes it, written here with gguf-py: tensor names from
    gguf-py's own map, Llama's Q/K rows interleaved for its RoPE, Llama 3's scaled frequencies and Phi-3's
    LongRoPE factors as tensors, float32 weights, and the SmolLM2 GGUF's vocabulary."""
    import gguf
    from safetensors.numpy import load_file

    from modelbuild.arch.llama import rope_frequencies

    folder = TINY_DIR / "families" / name
    hf = json.loads((folder / "config.json").read_text())
    arch, layers = GGUF_ARCH[name], hf["num_hidden_layers"]
    heads, kv_heads = hf["num_attention_heads"], hf["num_key_value_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    path = TINY_DIR / "families" / f"{name}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = hf.get("rope_theta") or rope.get("rope_theta", 10000.0)
    if not arch.startswith("gemma"):
        writer.add_rope_freq_base(theta)
    _copy_vocabulary(writer, source.default_model_path())
    if arch.startswith("gemma"):  # what llama.cpp keeps of a Gemma config (it assumes the layer pattern)
        writer.add_sliding_window(hf["sliding_window"])
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if hf.get(key):
                getattr(writer, f"add_{key}")(hf[key])
        full = rope.get("full_attention") or rope
        writer.add_rope_freq_base(full["rope_theta"])
        if full.get("rope_type") == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(full["factor"])

    tensors = load_file(str(folder / "model.safetensors"))
    if rope.get("rope_type") == "llama3":  # as llama.cpp's converter: the divisor of each frequency
        plain, _ = rope_frequencies(head_dim, theta, None)
        scaled, _ = rope_frequencies(head_dim, theta, rope)
        writer.add_tensor("rope_freqs.weight", (plain / scaled).astype(np.float32))
    if rope.get("rope_type") == "longrope":
        original = hf["original_max_position_embeddings"]
        factor = hf["max_position_embeddings"] / original
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(factor) / np.log(original))))
        writer.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], np.float32))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], layers)
    for hf_name, value in tensors.items():
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            value = _interleave_rope(value, heads if "q_proj" in hf_name else kv_heads)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            value = value + 1  # llama.cpp's Gemma converters store (1 + w)
        writer.add_tensor(names.get_name(hf_name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _interleave_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's order for Llama's q and k rows: each head's two halves interleaved pairwise."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _copy_vocabulary(writer, gguf_path: Path) -> None:
    from gguf import GGUFReader
    fields = GGUFReader(gguf_path).fields
    value = lambda key: fields[key].contents()  # noqa: E731
    writer.add_tokenizer_model(value("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(value("tokenizer.ggml.pre"))
    writer.add_token_list(value("tokenizer.ggml.tokens"))
    writer.add_token_types(value("tokenizer.ggml.token_type"))
    writer.add_token_merges(value("tokenizer.ggml.merges"))
    writer.add_bos_token_id(value("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(value("tokenizer.ggml.eos_token_id"))
    writer.add_chat_template(value("tokenizer.chat_template"))


def build_family_gguf(name: str, presets=("q0f32", "q4f32_1")) -> Path:
    """The models folder our pipeline built from the family's GGUF."""
    out = TINY_DIR / "families" / f"{name}-gguf-models"
    pipeline.build(pipeline.BuildOptions(model=write_family_gguf(name), presets=list(presets), out_dir=out,
                                         wasm_opt="-O1", shard_mb=1))
    return out
