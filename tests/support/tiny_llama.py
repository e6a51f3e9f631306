"""A tiny randomly initialised Llama in a Hugging Face folder, with the real SmolLM2 tokenizer.

No package ships a tiny test model, so we write one: config.json, model.safetensors (random weights
under Hugging Face names), tokenizer.json and tokenizer_config.json with the real chat template.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from modelbuild import source

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 1024,
          "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
          "prefill_chunk_size": 16}  # small, so a test prompt spans several prefill chunks


def write_tiny_llama(folder: Path, seed: int = 0) -> Path:
    real = source.open_source(source.default_model_path())
    vocab = real.config["vocab_size"]
    c = dict(CONFIG, vocab_size=vocab)
    h, hd = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"]
    rng = np.random.default_rng(seed)
    weight = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
    norm = lambda: (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    tensors = {"model.embed_tokens.weight": weight(vocab, h), "model.norm.weight": norm(), "lm_head.weight": weight(vocab, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
                    p + "self_attn.q_proj.weight": weight(c["num_attention_heads"] * hd, h),
                    p + "self_attn.k_proj.weight": weight(c["num_key_value_heads"] * hd, h),
                    p + "self_attn.v_proj.weight": weight(c["num_key_value_heads"] * hd, h),
                    p + "self_attn.o_proj.weight": weight(h, c["num_attention_heads"] * hd),
                    p + "mlp.gate_proj.weight": weight(c["intermediate_size"], h),
                    p + "mlp.up_proj.weight": weight(c["intermediate_size"], h),
                    p + "mlp.down_proj.weight": weight(h, c["intermediate_size"])}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(c, indent=1))
    (folder / "tokenizer.json").write_text(real.tokenizer_json)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": real.chat_template}))
    return folder
