"""The default model's GGUF as a Hugging Face folder (float32 safetensors, config, tokenizer, template),
so that the peers that need one (the ONNX export for transformers.js) start from the same weights as
Seam's build. It reads the GGUF through the build's own reader (modelbuild.source), which names the
tensors as Hugging Face does and undoes llama.cpp's RoPE interleaving; the blocks it keeps exact
(Q4_0, Q4_1, Q8_0) are dequantized here.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.numpy import save_file

from modelbuild.blocks import Blocks
from modelbuild.source import open_source


def write_hf_folder(gguf: Path, folder: Path) -> Path:
    source = open_source(gguf)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: w.dequantize() if isinstance(w, Blocks) else w for name, w in source.read_tensors()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    c = source.config
    eos = source.stop_token_ids[-1] if source.stop_token_ids else None
    config = {**c, "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "torch_dtype": "float32",
              "head_dim": c["hidden_size"] // c["num_attention_heads"], "attention_bias": False, "mlp_bias": False,
              "bos_token_id": source.bos_token_id, "eos_token_id": source.stop_token_ids}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": source.bos_token_id, "eos_token_id": source.stop_token_ids}, indent=2))
    (folder / "tokenizer.json").write_text(source.tokenizer_json)
    vocab = json.loads(source.tokenizer_json)["model"]["vocab"]
    token = {i: t for t, i in vocab.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "chat_template": source.chat_template, "model_max_length": 8192,
        "bos_token": token.get(source.bos_token_id), "eos_token": token.get(eos), "add_prefix_space": False,
        "clean_up_tokenization_spaces": False}, indent=2))
    return folder
