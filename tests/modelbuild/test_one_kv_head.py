"""A Llama with ONE key/value head (multi-query attention) and head_dim 16: the tiny Llama of tiny_llama.py
with num_key_value_heads 1 (hidden 64, 4 query heads sharing the one KV head), through the real pipeline.

Its WebGPU build used to fail inside TVM ("InternalError: variable cse_v12 has been used before definition"):
TVM 0.27's common-subexpression pass broke the cache's prefill kernels at one KV head, head_dim 16 and
float32 activations, through their dead inline-RoPE branch, which gpu_attention.py now removes. Its logits
are checked against numpy as test_tiny_llama.py checks the tiny Llama's: the CPU library here, the WebGPU
build (a prompt of three prefill chunks, then decode steps) in Chromium on SwiftShader.
"""
from unittest import mock

import numpy as np
import pytest
import tvm

from modelbuild import compile as compiler, pipeline, source
from modelbuild.arch import get_arch
from modelbuild.gpu_attention import INLINE_ROPE, use_gpu_attention, without_inline_rope
from modelbuild.quantization import get_preset
from modelbuild.schedule import KERNEL_SETS
from modelbuild.toolchain import targets
from modelrun.model import Model
from tests.support import tiny_llama
from tests.support.logits import (DECODE, PROMPT, RUN, assert_logits_close, assert_steps_close, attention_reference,
                                  reference_steps, serve_logits_page)
from tests.support.models import TINY_DIR, TINY_SHARD_MB

PRESETS = ("q0f32", "q4f32_1")  # float32 activations: the failing builds (q4f16_1's kernels built)
RNG = np.random.default_rng(5)


def write_one_kv_head():
    with mock.patch.dict(tiny_llama.CONFIG, num_key_value_heads=1):
        return tiny_llama.write_tiny_llama(TINY_DIR / "one-kv-head")


def test_webgpu_attention_kernels_of_one_kv_head_compile():
    """Each kernel set's WebGPU module compiles (no browser needed), and every attention kernel left in it has lost
    its inline-RoPE branch."""
    folder = write_one_kv_head()
    model = source.open_source(folder)
    arch = get_arch(model.architecture)
    mod, _ = compiler.export(arch, arch.read_config(model.config), get_preset("q0f32"), targets.webgpu())
    kernels = use_gpu_attention(mod)
    flagged = [f for _, f in kernels.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and any(p.name == INLINE_ROPE for p in f.params)]
    assert len(flagged) >= 4 and all("rotary_mode == 1" not in f.script() for f in flagged)
    for kernel_set in KERNEL_SETS:
        compiler.compile_webgpu(mod, targets.webgpu(), kernel_set)


def test_an_attention_kernel_without_inline_rope_gives_the_same_results_and_refuses_the_inline_mode():
    """The transform on TVM's own CPU prefill kernel (same signature as the WebGPU one), built for this CPU: its
    results for rotary_mode 0 are numpy's, and rotary_mode 1 is refused, not computed without RoPE."""
    from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_ragged_cpu

    h_kv, h_q, d, rows = 1, 4, 16, 7
    func = without_inline_rope(_attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}))
    library = tvm.tirx.build(func.with_attr("global_symbol", "main"), target=targets.cpu())
    q = RNG.standard_normal((rows, h_q, d)).astype(np.float32)
    k, v = (RNG.standard_normal((rows, h_kv, d)).astype(np.float32) for _ in range(2))
    indptr = np.array([0, rows], np.int32)

    def run(rotary_mode: int):
        args = [tvm.runtime.tensor(a, tvm.cpu()) for a in (q, indptr, k, v, indptr, np.arange(rows, dtype=np.int32),
                                                            np.zeros(1, np.int32), np.zeros_like(q),
                                                            np.zeros((rows, h_q), np.float32))]
        library["main"](*args, 1, rotary_mode, 1.0, 10000.0, 1 / np.sqrt(d))
        return args[7].numpy(), args[8].numpy()

    out, lse = run(0)
    want_out, want_lse = attention_reference(q, k, v, True, 1 / np.sqrt(d))
    np.testing.assert_allclose(out, want_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=0, atol=1e-4)
    with pytest.raises(Exception, match="applies no rotary embedding"):
        run(1)


@pytest.fixture(scope="module")
def one_kv_head():
    """The models folder built from the tiny Llama with one KV head (incrementally, under $SEAM_CACHE)."""
    folder = write_one_kv_head()
    out = TINY_DIR / "one-kv-head-models"
    pipeline.build(pipeline.BuildOptions(model=folder, presets=list(PRESETS), out_dir=out, wasm_opt="-O1",
                                         shard_mb=TINY_SHARD_MB))
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_one_kv_head_cpu_library_logits_match_numpy(one_kv_head, preset):
    model_dir = one_kv_head / f"one-kv-head-{preset}"
    config, expected = reference_steps(model_dir, preset)
    assert config["model_config"]["num_key_value_heads"] == 1 and config["model_config"]["head_dim"] == 16
    runner = Model(model_dir / f"one-kv-head-{preset}-cpu.so", model_dir / "tensor-cache.json", config).conversation()
    got = [runner.prefill(PROMPT)] + [runner.decode(token) for token in DECODE]
    for g, e in zip(got, expected):
        assert_logits_close(g, e)


@pytest.mark.parametrize("preset,kernels", [("q0f32", "software"), ("q4f32_1", "gpu")])
def test_one_kv_head_webgpu_logits_in_chromium_match_numpy(one_kv_head, preset, kernels, launch_page, serve_folder):
    _, expected = reference_steps(one_kv_head / f"one-kv-head-{preset}", preset)
    page = launch_page()
    page.goto(serve_logits_page(one_kv_head, serve_folder))
    result = page.evaluate("runModel", {"modelUrl": f"one-kv-head-{preset}/", "kernels": kernels,
                                        "featureLevel": "core", **RUN})
    assert "swiftshader" in result["adapter"].lower(), result["adapter"]
    assert_steps_close(result, expected)
