"""Tiny random checkpoints of the Llama-shaped families (Llama 3.x, Mistral, Qwen2/2.5, Qwen3), written by
transformers itself from a config with the family's own features, with the real SmolLM2 tokenizer, and
built by our pipeline under $SEAM_CACHE/tests/tiny/families (incrementally: the same bytes each time)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from modelbuild import pipeline, source
from tests.conftest import TINY_DIR

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
    "qwen3": ("qwen3", {"tie_word_embeddings": True, "head_dim": 32}),            # head_dim x heads != hidden
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
