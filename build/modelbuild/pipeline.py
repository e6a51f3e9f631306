"""`make build-model`: weights -> per-preset artifacts under models/ -> the catalog models/manifest.json.

For each preset, in a temporary folder next to the final one:
  1. quantize the weights (transcoding a GGUF's own 4- and 8-bit blocks exactly) and write the tensor
     cache (shards + sha256),
  2. compile for WebGPU, once per kernel set (software adapters, GPUs), and link a `.wasm` of each,
  3. compile for the browser's CPU (wasm SIMD; presets with float32 activations) and link its `.wasm`,
     and compile the server's CPU library,
  4. write tokenizer.json and mlc-chat-config.json,
  5. self-check: the CPU library's greedy tokens for a fixed prompt must equal those of a numpy
     forward pass over the same dequantized weights; they become the catalog's golden tokens,
then the folder replaces the old one in one rename. A preset whose inputs (weights, code, toolchain,
options) are unchanged is skipped, so a rerun with nothing changed takes seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from modelbuild import chat, compile as compiler, manifest, selfcheck
from modelbuild.arch import get_arch
from modelbuild.convert import SHARD_MB, verify_tensor_cache, write_tensor_cache
from modelbuild.errors import BuildError
from modelbuild.quantization import REQUIRED_FEATURES, eight_bit_modules, get_preset, quantize_params
from modelbuild.reference import dequantized_weights
from modelbuild.schedule import KERNEL_SETS
from modelbuild.source import ModelSource, open_source
from modelbuild.toolchain import targets, web_runtime
from modelbuild.toolchain.wasm_link import CPU_HEAP_FLAGS, THREADS_FLAGS, WasmLinker
from modelrun.chat import ChatTemplate
from modelrun.model import Model

CODE_DIR = Path(__file__).resolve().parent


@dataclass
class BuildOptions:
    model: Path
    presets: list[str]
    out_dir: Path
    wasm_opt: str = "-O3"  # smaller downloads; "-O1" links in a second for development
    shard_mb: float = SHARD_MB  # weight shard size; small shards give a small model several (tests)


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


@contextmanager
def step(name: str):
    started = time.time()
    log(f"{name} ...")
    yield
    log(f"{name}: done in {time.time() - started:.1f}s")


def build(options: BuildOptions) -> list[dict]:
    started = time.time()
    presets = [get_preset(name) for name in options.presets]  # unknown names fail before any work
    web_runtime.runtime_objects()
    with step(f"reading {options.model}"):
        source = open_source(options.model)
    arch = get_arch(source.architecture)
    config = arch.read_config(source.config)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    weights = None  # the source's, under the float model's names: float arrays or exact Blocks
    for preset in presets:
        model_id = f"{source.name}-{preset.name}"
        key = build_key(source, config, preset, options)
        final = options.out_dir / model_id
        if is_up_to_date(final, key):
            log(f"{model_id}: up to date, skipped")
            continue
        if weights is None:
            with step("loading the source weights"):
                weights = dict(arch.load_params(source.read_tensors(), config))
        build_preset(source, arch, config, preset, model_id, key, weights, options)
    with step("writing models/manifest.json"):
        entries = manifest.write_manifest(options.out_dir)
    log(f"finished in {time.time() - started:.1f}s: {', '.join(e['id'] for e in entries)}")
    return entries


def build_key(source: ModelSource, config, preset, options: BuildOptions) -> str:
    """Everything a preset's artifacts depend on; a change to any of it rebuilds that preset."""
    digest = hashlib.sha256()
    for part in (source.fingerprint, json.dumps(config.to_dict(), sort_keys=True), repr(preset), options.wasm_opt, str(options.shard_mb),
                 metadata.version("apache-tvm"), *map(web_runtime.cache_key, web_runtime.FLAVORS)):
        digest.update(part.encode())
    for path in sorted(CODE_DIR.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_up_to_date(folder: Path, key: str) -> bool:
    info_path = folder / "build-info.json"
    if not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    if info.get("build_key") != key:
        return False
    try:
        verify_tensor_cache(folder)
    except BuildError:
        return False
    return all((folder / name).is_file() for name in info["files"].values())


def build_preset(source, arch, config, preset, model_id, key, weights, options) -> None:
    log(f"{model_id}: building")
    with tempfile.TemporaryDirectory(prefix=f".building-{model_id}-", dir=options.out_dir) as tmp:
        work = Path(tmp)
        files = {"config": "mlc-chat-config.json", "tensor_cache": "tensor-cache.json", "tokenizer": "tokenizer.json",
                 **{f"wasm_{k}": f"{model_id}-webgpu-{k}.wasm" for k in KERNEL_SETS}, "cpu_library": f"{model_id}-cpu.so"}
        eight_bit = eight_bit_modules(weights)  # kept in 8 bits, as the source holds them
        mod, param_specs = compiler.export(arch, config, preset, targets.webgpu(), eight_bit)
        kernels, f16 = {}, False
        for kernel_set in KERNEL_SETS:
            with step(f"{model_id}: compiling the {kernel_set} kernels for WebGPU and linking the wasm"):
                executable, schedules = compiler.compile_webgpu(mod, targets.webgpu(), kernel_set)
                executable.export_library(str(work / files[f"wasm_{kernel_set}"]), fcompile=WasmLinker(options.wasm_opt))
                wgsl = compiler.wgsl_source(executable)
                kernels[kernel_set] = {"file": f"wasm_{kernel_set}", **compiler.workgroup_needs(wgsl),
                                       "schedules": schedules}
                f16 = f16 or "enable f16" in wgsl
        if has_browser_cpu_library(preset):
            files["wasm_cpu"] = f"{model_id}-wasm-cpu.wasm"
            files["wasm_cpu_threads"] = f"{model_id}-wasm-cpu-threads.wasm"
            with step(f"{model_id}: compiling for the browser's CPU (wasm SIMD) and linking its two wasm builds"):
                wasm_mod, wasm_specs = compiler.export(arch, config, preset, targets.wasm_cpu(), eight_bit)
                if wasm_specs != param_specs:  # it must read the very shards the WebGPU variant reads
                    raise BuildError(f"{model_id}: the browser CPU build takes other parameters than the WebGPU one",
                                     "report this: the two exports of one preset must agree")
                executable = compiler.compile_cpu(wasm_mod, targets.wasm_cpu())
                executable.export_library(str(work / files["wasm_cpu"]), fcompile=WasmLinker(options.wasm_opt, CPU_HEAP_FLAGS))
                executable.export_library(str(work / files["wasm_cpu_threads"]),
                                          fcompile=WasmLinker(options.wasm_opt, THREADS_FLAGS, runtime="threads"))
        with step(f"{model_id}: compiling the CPU library"):
            cpu_mod, _ = compiler.export(arch, config, preset, targets.cpu(), eight_bit)
            compiler.compile_cpu(cpu_mod, targets.cpu()).export_library(str(work / files["cpu_library"]))
        with step(f"{model_id}: quantizing weights into shards"):
            names = {name for name, _, _ in param_specs}
            params = dict(quantize_params(weights.items(), names, preset))
            index = write_tensor_cache(params, {n: (s, d) for n, s, d in param_specs}, work, options.shard_mb)
        (work / files["tokenizer"]).write_text(source.tokenizer_json)
        chat_config = manifest.chat_config(source, config, preset, [n for n, _, _ in param_specs])
        (work / files["config"]).write_text(json.dumps(chat_config, indent=1))

        with step(f"{model_id}: self-check against the numpy reference"):
            template = ChatTemplate.of_model(chat_config)
            prompts = [chat.encode_chat(source.tokenizer_json, template, m) for m in chat.SELF_CHECK_PROMPTS]
            model = Model(work / files["cpu_library"], work / files["tensor_cache"], chat_config)
            greedy = lambda ids: model.greedy(ids, chat.SELF_CHECK_TOKENS, source.stop_token_ids)  # noqa: E731
            chosen, golden, lead = selfcheck.decisive_check(prompts, greedy, preset.model_dtype)
            messages, prompt_ids = chat.SELF_CHECK_PROMPTS[chosen], prompts[chosen]
            log(f"{model_id}: check prompt {chosen + 1} of {len(prompts)}, each token leading by {lead:.3g} or more")
            reference = arch.reference(config, dequantized_weights(params))
            expected, reference_logits = reference.greedy(prompt_ids, chat.SELF_CHECK_TOKENS, source.stop_token_ids)
            agreement = selfcheck.compare_greedy(golden, expected, reference_logits, preset.model_dtype)
            log(f"{model_id}: {agreement}")

        info = {
            "id": model_id, "model": source.name, "quantization": preset.name, "build_key": key, "files": files,
            "required_features": REQUIRED_FEATURES[preset.name] + (["shader-f16"] if f16 else []),
            "kernels": kernels,
            "self_check": {"messages": messages, "prompt_token_ids": prompt_ids,
                           "max_tokens": chat.SELF_CHECK_TOKENS, "golden_token_ids": golden},
            "shard_bytes": sum(s["nbytes"] for s in index["records"]),
            "largest_param_bytes": max(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in param_specs),
            "built_with": manifest.toolchain_versions(),
        }
        (work / "build-info.json").write_text(json.dumps(info, indent=1))
        install(work, options.out_dir / model_id)


def has_browser_cpu_library(preset) -> bool:
    """Float32 activations only: wasm has no f16 arithmetic, and emulated it ran SmolLM2's q4f16_1 100x
    slower (0.12 decode tokens/s against q4f32_1's 12, in Chromium here)."""
    return preset.model_dtype == "float32"


def install(work: Path, final: Path) -> None:
    """Swap the verified folder into place; the old one is removed only after the new one is there."""
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(work, final)
    shutil.rmtree(old, ignore_errors=True)
    work.mkdir()  # TemporaryDirectory cleans up the (now empty) path it created
