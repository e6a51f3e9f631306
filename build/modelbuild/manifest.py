"""The artifact contract: each model's `mlc-chat-config.json`, and the catalog `models/manifest.json`.

The catalog is the only file the server reads to learn what was built; models/manifest.schema.json
describes it and every write is validated against that schema first.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import jsonschema

from modelrun.chat import control_tokens
from modelbuild.convert import sha256_file
from modelbuild.toolchain import web_runtime
from modelbuild.toolchain.wasm_link import CPU_MEMORY_PAGES

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "models" / "manifest.schema.json"
SCHEMA_VERSION = 2
PAGE_SIZE = 16


def chat_config(source, config, preset, param_names: list[str]) -> dict:
    """MLC's mlc-chat-config.json fields, plus the chat template and parameter order this runtime uses."""
    return {
        "model_type": source.architecture,
        "quantization": preset.name,
        "model_config": config.to_dict(),
        "vocab_size": config.vocab_size,
        "context_window_size": config.context_window_size,
        "prefill_chunk_size": config.prefill_chunk_size,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "kv_cache_page_size": PAGE_SIZE,
        "temperature": 0.7,
        "top_p": 0.95,
        "tokenizer_files": ["tokenizer.json"],
        "chat_template": source.chat_template,
        "bos_token_id": source.bos_token_id,
        "special_tokens": source.special_tokens,
        "control_tokens": control_tokens(source.tokenizer_json),
        "stop_token_ids": source.stop_token_ids,
        "tokenizer_info": tokenizer_info(source.tokenizer_json),
        "param_names": param_names,
    }


def tokenizer_info(tokenizer_json: str) -> dict:
    """How token strings map to bytes, which grammar-constrained decoding (xgrammar, on the server and in
    the browser) needs to know: GPT-2 style byte-level BPE, SentencePiece byte fallback, or raw strings."""
    tokenizer = json.loads(tokenizer_json)
    decoders = tokenizer.get("decoder") or {}
    kinds = {d.get("type") for d in decoders.get("decoders", [decoders])}
    vocab_type = "byte_level" if "ByteLevel" in kinds else "byte_fallback" if "ByteFallback" in kinds else "raw"
    pre = tokenizer.get("pre_tokenizer") or {}
    prepend = pre.get("type") == "Metaspace" and pre.get("prepend_scheme", "always") != "never"
    return {"vocab_type": vocab_type, "add_prefix_space": prepend}


def toolchain_versions() -> dict:
    tvm_version = metadata.version("apache-tvm")
    return {"tvm": tvm_version, "tvm_ffi": metadata.version("apache-tvm-ffi"), "web_runtime": web_runtime.cache_key(),
            "tvmjs": ".".join(tvm_version.split(".")[:2]), "emcc": web_runtime.emcc_version("emcc")}


def catalog_entry(folder: Path) -> dict:
    info = json.loads((folder / "build-info.json").read_text())
    files = info["files"]
    chat = json.loads((folder / files["config"]).read_text())
    c = chat["model_config"]
    dtype_bytes = 2 if info["quantization"].endswith(("f16_1", "f16")) else 4
    # KV cache: K and V for every layer, head and position of the context window, in the model dtype.
    kv_layer = 2 * c["num_key_value_heads"] * c["head_dim"] * chat["context_window_size"] * dtype_bytes
    # Prefill activations: a few live buffers of chunk x (widest layer output) at a time.
    widest = max(2 * c["intermediate_size"], (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * c["head_dim"])
    activations = 4 * chat["prefill_chunk_size"] * widest * dtype_bytes + 4 * c["vocab_size"]
    largest_buffer = max(info["largest_param_bytes"], kv_layer, chat["prefill_chunk_size"] * widest * dtype_bytes)
    wasm = {k: folder / files[v["file"]] for k, v in info["kernels"].items()}
    cpu_wasm = [folder / files[f] for f in ("wasm_cpu", "wasm_cpu_threads") if f in files]
    downloaded = [folder / files["config"], folder / files["tokenizer"], *wasm.values(), *cpu_wasm]
    content, weights = hashlib.sha256(), hashlib.sha256()
    for path in [folder / files["tensor_cache"], *downloaded]:
        digest = sha256_file(path).encode()
        content.update(digest)
        if path not in [*wasm.values(), *cpu_wasm]:
            weights.update(digest)
    # A browser downloads one kernel set's wasm: the larger one, to be safe.
    common_bytes = info["shard_bytes"] + sum(p.stat().st_size for p in downloaded[:2])
    download_bytes = common_bytes + max(p.stat().st_size for p in wasm.values())
    entry = {
        "id": info["id"],
        "model": info["model"],
        "quantization": info["quantization"],
        "version": content.hexdigest()[:16],
        "weights_version": weights.hexdigest()[:16],
        "path": f"{folder.name}/",
        "files": files,
        "download_bytes": download_bytes,
        "context_window_size": chat["context_window_size"],
        "prefill_chunk_size": chat["prefill_chunk_size"],
        "requirements": {
            "features": sorted(set(info["required_features"])),
            "max_storage_buffer_binding_size": largest_buffer,
            "max_buffer_size": largest_buffer,
            "estimated_gpu_memory_bytes": info["shard_bytes"] + c["num_hidden_layers"] * kv_layer + activations,
        },
        "kernels": {k: {f: v[f] for f in ("file", "max_invocations_per_workgroup", "max_workgroup_storage_bytes")}
                    for k, v in info["kernels"].items()},
        "self_check": info["self_check"],
        "built_with": info["built_with"],
    }
    if cpu_wasm:
        # On the CPU everything lives in the wasm heap, in float32: weights, the KV cache, activations, code.
        kv_f32 = kv_layer * 4 // dtype_bytes
        entry["cpu"] = {"file": "wasm_cpu", "simd": True,
                        "threads": {"file": "wasm_cpu_threads", "memory_pages": list(CPU_MEMORY_PAGES)},
                        "download_bytes": common_bytes + max(p.stat().st_size for p in cpu_wasm),
                        "memory_bytes": (info["shard_bytes"] + c["num_hidden_layers"] * kv_f32
                                         + activations * 4 // dtype_bytes + 4 * cpu_wasm[0].stat().st_size)}
    return entry


def with_compatible_versions(entry: dict, previous: dict | None) -> dict:
    """A rebuild that changed only the kernels (same weights, tokenizer and config) lists the versions it
    replaces as compatible: browsers holding one keep using it instead of downloading again. Deleting
    models/manifest.json before a build ends the chain."""
    if previous and previous["version"] != entry["version"] and previous.get("weights_version") == entry["weights_version"]:
        older = [previous["version"], *previous.get("compatible_versions", [])]
        return {**entry, "compatible_versions": [v for v in older if v != entry["version"]][:8]}
    if previous and previous["version"] == entry["version"] and previous.get("compatible_versions"):
        return {**entry, "compatible_versions": previous["compatible_versions"]}
    return entry


def write_manifest(models_dir: Path) -> list[dict]:
    folders = [p.parent for p in sorted(models_dir.glob("*/build-info.json")) if not p.parent.name.startswith(".")]
    path = models_dir / "manifest.json"
    previous = {m["id"]: m for m in json.loads(path.read_text())["models"]} if path.is_file() else {}
    entries = [catalog_entry(folder) for folder in folders]
    entries = [with_compatible_versions(e, previous.get(e["id"])) for e in entries]
    catalog = {"schema_version": SCHEMA_VERSION, "models": entries}
    jsonschema.validate(catalog, json.loads(SCHEMA_PATH.read_text()))
    tmp = models_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(catalog, indent=1))
    os.replace(tmp, models_dir / "manifest.json")
    return entries
