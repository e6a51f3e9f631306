"""Llama 3.x, Mistral, Qwen2/2.5 and Qwen3 through the real pipeline, checked against transformers.

Their weights cannot be downloaded here, but their architectures can be checked exactly: transformers
instantiates each from a tiny config with random weights, and its forward pass of the very weights the
compiled model loads (dequantized for the 4-bit presets, mapped back to Hugging Face's names) is the
reference. Tolerance as in test_tiny_llama.py: max |logits - reference| <= 2e-3 of the logits' scale per
step (2e-2 with f16 activations), over a prompt of three prefill chunks and three decode steps.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import tvm
from safetensors.numpy import save_file
from tvm.contrib import tvmjs

from modelbuild import pipeline, source
from modelbuild.cpu_runner import CpuRunner
from modelbuild.errors import BuildError
from modelbuild.reference import dequantized_weights
from tests.modelbuild.test_tiny_llama import (DECODE, F16_RTOL, PROMPT, RTOL, assert_logits_close, assert_steps_close,
                                              serve_logits_page)
from tests.tiny_families import FAMILIES, PRESETS, TINY, build_family

# Found with these tests: TVM 0.27's WebGPU attention over the KV pages an earlier prefill chunk wrote is
# wrong for head_dim >= 32 (logits off by their own scale, on SwiftShader and llvmpipe, any preset, no GPU
# error), while one chunk, decode, and the CPU library are right. The browser engine therefore prefills a
# prompt in one chunk (local_engine.js); the chunked run is kept as a strict xfail, to show when TVM fixes it.
CHUNKED_WRONG = "TVM 0.27's WebGPU prefill over earlier chunks' KV pages is wrong for head_dim >= 32"


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return request.param, *build_family(request.param)


def hf_weights(params: dict[str, np.ndarray], config: dict) -> dict[str, torch.Tensor]:
    """The compiled model's parameters under Hugging Face's names: fused q/k/v and gate/up split again."""
    w = dequantized_weights(params)
    heads, kv, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    out = {}
    for name, value in w.items():
        if ".qkv_proj." in name:
            q, k, v = np.split(value, [heads * d, (heads + kv) * d])
            for part, piece in zip("qkv", (q, k, v)):
                out[name.replace("qkv_proj", f"{part}_proj")] = piece
        elif ".gate_up_proj." in name:
            gate, up = np.split(value, 2)
            out[name.replace("gate_up_proj", "gate_proj")], out[name.replace("gate_up_proj", "up_proj")] = gate, up
        else:
            out[name] = value
    if config["tie_word_embeddings"]:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}


def transformers_steps(model, model_dir) -> list[np.ndarray]:
    """transformers' logits, on the compiled model's weights, after the prompt and each decode token."""
    config = json.loads((model_dir / "mlc-chat-config.json").read_text())
    params, _ = tvmjs.load_tensor_cache(str(model_dir), tvm.cpu())
    missing, unexpected = model.load_state_dict(hf_weights({k: v.numpy() for k, v in params.items()},
                                                           config["model_config"]), strict=False)
    assert not unexpected and all("rotary_emb" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT + DECODE])).logits[0].double().numpy()
    return [logits[len(PROMPT) - 1 + i] for i in range(len(DECODE) + 1)]


@pytest.mark.parametrize("preset", PRESETS)
def test_cpu_library_logits_match_transformers(family, preset):
    name, model, out = family
    model_dir = out / f"{name}-{preset}"
    expected = transformers_steps(model, model_dir)
    config = json.loads((model_dir / "mlc-chat-config.json").read_text())
    runner = CpuRunner(model_dir / f"{name}-{preset}-cpu.so", model_dir, config["param_names"],
                       config["context_window_size"], config["prefill_chunk_size"])
    runner.reset()
    got = [runner.prefill(PROMPT)] + [runner.decode(token) for token in DECODE]
    for g, e in zip(got, expected):
        assert_logits_close(g, e, F16_RTOL if preset == "q4f16_1" else RTOL)


def test_the_families_configs_are_read_as_their_checkpoints_mean_them(family):
    name, _, out = family
    model_config = json.loads((out / f"{name}-q0f32" / "mlc-chat-config.json").read_text())["model_config"]
    expected = {"llama3": {"rope_scaling": FAMILIES["llama3"][1]["rope_scaling"]}, "qwen2": {"attention_bias": True},
                "qwen3": {"qk_norm": True, "head_dim": 32}, "mistral": {"context_window_size": 512}}[name]
    assert {k: model_config[k] for k in expected} == expected


@pytest.mark.parametrize("field,value,named", [
    ("num_local_experts", 8, "num_local_experts = 8, a mixture of experts"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling.rope_type = 'yarn'"),
    ("hidden_act", "gelu", "hidden_act = 'gelu'"),
])
def test_unsupported_features_are_refused_before_compiling_naming_the_field(tmp_path, field, value, named):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", **TINY, field: value}))
    (folder / "tokenizer.json").write_text(source.open_source(source.default_model_path()).tokenizer_json)
    save_file({"model.norm.weight": np.ones(64, np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(BuildError, match=named.replace("(", r"\(").replace("[", r"\[")):
        pipeline.build(pipeline.BuildOptions(model=folder, presets=["q0f32"], out_dir=tmp_path / "out"))


@pytest.mark.parametrize("chunk", ["one", "several"])
def test_webgpu_logits_in_chromium_match_transformers(family, chunk, launch_page, serve_folder, request):
    """The f32 preset's WebGPU kernels (the set a software adapter picks) on SwiftShader: the prompt in one
    prefill, as the browser engine runs it, and in chunks of 16 (head_dim 16 only: CHUNKED_WRONG)."""
    name, model, out = family
    if chunk == "several" and json.loads((out / f"{name}-q0f32" / "mlc-chat-config.json").read_text())[
            "model_config"]["head_dim"] >= 32:
        request.applymarker(pytest.mark.xfail(strict=True, reason=CHUNKED_WRONG))
    preset = "q4f32_1"
    expected = transformers_steps(model, out / f"{name}-{preset}")
    page = launch_page()
    page.goto(serve_logits_page(out, serve_folder))
    result = page.evaluate("runModel", {"modelUrl": f"{name}-{preset}/", "kernels": "software", "featureLevel": "core",
                                        "promptIds": PROMPT, "decodeIds": DECODE,
                                        "chunk": len(PROMPT) if chunk == "one" else 16})
    assert_steps_close(result, expected)
