"""A tiny random Llama through the real pipeline, checked against numpy on the CPU and in Chromium.

Tolerance: max |logits - reference| <= 2e-3 * max |reference logits| per step (2e-2 with f16
activations), and the same argmax unless the reference's top two are within twice that bound.
The reference runs in float64 on the very parameters the compiled model loads (dequantized for q4f32_1),
so the bound covers float32 rounding through two layers, RoPE and softmax. Measured: 1.6e-6 of scale on
the CPU, 4.2e-4 on SwiftShader, whose WGSL exp2/inverseSqrt may be several ULP off (the WGSL spec allows
it) in the attention kernels; a wrong mask, RoPE pairing, KV page or dequantize is off by 1e-1 or more.
"""
import pytest

from modelbuild.quantization import get_preset
from modelbuild.schedule import KERNEL_SETS
from modelrun.model import Model
from tests.support.browsers import COMPATIBILITY_FLAGS
from tests.support.logits import (DECODE, F16_RTOL, PROMPT, RTOL, RUN, assert_logits_close, assert_steps_close,
                                  reference_steps, serve_logits_page)

PRESETS = ("q0f32", "q4f32_1")


@pytest.fixture(scope="module")
def built(tiny_built):
    return tiny_built[1]


@pytest.mark.parametrize("preset", PRESETS)
def test_cpu_library_logits_match_numpy(built, preset):
    model_dir = built / f"tiny-llama-{preset}"
    config, expected = reference_steps(model_dir, preset)
    runner = Model(model_dir / f"tiny-llama-{preset}-cpu.so", model_dir / "tensor-cache.json",
                   config).conversation()
    got = [runner.prefill(PROMPT)] + [runner.decode(token) for token in DECODE]
    for g, e in zip(got, expected):
        assert_logits_close(g, e)


# Each kernel set of each quantized preset (q0f32 has no quantized matmuls: its two sets are the same),
# on both of Chromium's software adapters: a software adapter runs the GPU set too, only slower.
BUILDS = [("q0f32", "software")] + [("q4f32_1", kernels) for kernels in KERNEL_SETS]
ADAPTERS = {"swiftshader": ("core", []), "llvmpipe": ("compatibility", COMPATIBILITY_FLAGS)}


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("preset,kernels", BUILDS)
def test_webgpu_logits_in_chromium_match_numpy(built, preset, kernels, adapter, launch_page, serve_folder):
    _, expected = reference_steps(built / f"tiny-llama-{preset}", preset)
    feature_level, flags = ADAPTERS[adapter]
    page = launch_page(add=flags)
    page.goto(serve_logits_page(built, serve_folder))
    result = page.evaluate("runModel", {"modelUrl": f"tiny-llama-{preset}/", "kernels": kernels,
                                        "featureLevel": feature_level, **RUN})
    assert adapter in result["adapter"].lower() or feature_level == "compatibility", result["adapter"]
    assert_steps_close(result, expected)


@pytest.mark.parametrize("preset", PRESETS)
def test_cpu_build_logits_in_chromium_match_numpy(built, preset, launch_page, serve_folder):
    """The browser's CPU build (wasm SIMD), in a Chromium without WebGPU: the same model, on the same shards."""
    _, expected = reference_steps(built / f"tiny-llama-{preset}", preset)
    page = launch_page(drop=["--enable-unsafe-webgpu"])
    page.goto(serve_logits_page(built, serve_folder))
    assert page.evaluate("async () => !navigator.gpu || !(await navigator.gpu.requestAdapter())")
    result = page.evaluate("runModel", {"modelUrl": f"tiny-llama-{preset}/", "kernels": "cpu", **RUN})
    assert_steps_close(result, expected)


@pytest.mark.parametrize("preset", PRESETS)
def test_threaded_cpu_build_logits_in_chromium_match_numpy(built, preset, launch_page, serve_folder):
    """The CPU build's threaded wasm on 2 threads (a cross-origin isolated page): TVM's parallel loops shared
    by the page's thread and a helper Worker, over one shared memory."""
    _, expected = reference_steps(built / f"tiny-llama-{preset}", preset)
    page = launch_page(drop=["--enable-unsafe-webgpu"])
    page.goto(serve_logits_page(built, serve_folder, isolated=True))
    assert page.evaluate("self.crossOriginIsolated")
    result = page.evaluate("runModel", {"modelUrl": f"tiny-llama-{preset}/", "kernels": "cpu", "threads": 2, **RUN})
    assert result["threads"] == 2 and result["launches"] > 0  # its loops were shared with the helper
    assert_steps_close(result, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_build_logits_in_firefox_match_numpy(built, threads, serve_folder, firefox):
    _, expected = reference_steps(built / "tiny-llama-q4f32_1", "q4f32_1")
    firefox.goto(serve_logits_page(built, serve_folder, isolated=threads > 1))
    result = firefox.evaluate("runModel", {"modelUrl": "tiny-llama-q4f32_1/", "kernels": "cpu", "threads": threads, **RUN})
    assert result.get("threads", 1) == threads and (threads == 1 or result["launches"] > 0)
    assert_steps_close(result, expected)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("preset", ["q4f32_1", "q4f16_1"])
def test_webgpu_logits_in_firefox_match_numpy(built, preset, kernels, serve_folder, firefox):
    """Firefox's adapter (lavapipe) has shader-f16, so the f16 preset is checked here; f16 activations
    round to 11 bits, hence the looser bound."""
    _, expected = reference_steps(built / f"tiny-llama-{preset}", preset)
    firefox.goto(serve_logits_page(built, serve_folder))
    result = firefox.evaluate("runModel", {"modelUrl": f"tiny-llama-{preset}/", "kernels": kernels,
                                           "featureLevel": "core", **RUN})
    assert_steps_close(result, expected, RTOL if preset.endswith("f32_1") else F16_RTOL)
