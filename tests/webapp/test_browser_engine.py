"""The browser engine (Web Worker, tvmjs, WebGPU on SwiftShader) with the real default model, q4f32_1.

Token policy: at temperature 0 the browser must produce exactly the server CPU library's tokens. Both
run the same compiled model on the same weights; their logits differ by about 4e-4 of their scale
(see tests/modelbuild/test_tiny_llama.py), far below the top-2 gaps of these prompts.
"""
import json

import pytest

from tests.harness import CHROMIUM, CHROMIUM_FLAGS, COMPATIBILITY_FLAGS
from tests.webapp.helpers import models_subset, server_answer

MODEL_ID = "SmolLM2-135M-Instruct-q4f32_1"
# The catalog's self-check prompt (the chat page tests compare more prompts, through the page).
PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}]]
MAX_TOKENS = 8  # SwiftShader is slow (README: speed); the golden answer's first 8 tokens

RUN = """async ({ modelId, prompts, maxTokens }) => {
  const engine = window.seam.browserEngine();
  const model = window.seam.config.models.find((m) => m.id === modelId);
  const progress = [];
  await engine.load(model, (p) => progress.push(p));
  const answers = [];
  for (const messages of prompts) {
    const r = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: maxTokens });
    answers.push({ content: r.choices[0].message.content, finish: r.choices[0].finish_reason,
                   token_ids: r.seam.token_ids, stats: r.seam.stats, usage: r.usage });
  }
  return { answers, progress };
}"""


@pytest.fixture(scope="module")
def catalog(default_built):
    return json.loads((default_built / "manifest.json").read_text())


def test_browser_tokens_equal_the_server_cpu_tokens(page, live_app, catalog):
    page.goto(live_app)
    result = page.evaluate(RUN, {"modelId": MODEL_ID, "prompts": PROMPTS, "maxTokens": MAX_TOKENS})
    entry = next(m for m in catalog["models"] if m["id"] == MODEL_ID)
    golden = entry["self_check"]["golden_token_ids"]
    first = result["answers"][0]
    assert first["token_ids"] == golden[:-1][:MAX_TOKENS]  # the golden list ends with the stop token
    for messages, answer in zip(PROMPTS, result["answers"]):
        server = server_answer(live_app, messages, MAX_TOKENS)
        assert answer["content"] == server["choices"][0]["message"]["content"]
        assert answer["finish"] == server["choices"][0]["finish_reason"]
        assert answer["usage"] == server["usage"]
        assert answer["stats"]["where"] == "browser" and answer["stats"]["adapter"]
        assert answer["stats"]["decode_tokens_per_s"] > 0 and answer["stats"]["ttft_s"] > 0
    # Progress went from nothing to the whole download, in bytes, then to preparing the GPU.
    download = [p for p in result["progress"] if p["phase"] == "download"]
    assert download[0]["loaded"] < download[-1]["loaded"] == download[-1]["total"] == entry["download_bytes"]
    assert result["progress"][-1]["phase"] == "gpu"


BANDWIDTH = """async () => {
  const { measureBandwidth } = await import("/static/js/probe.js");
  const device = await (await navigator.gpu.requestAdapter({ featureLevel: "compatibility" })).requestDevice();
  try { return (await measureBandwidth(device, 16 * 1024 * 1024, 2)).bandwidth_gbps; } finally { device.destroy(); }
}"""


def test_the_engine_runs_on_a_compatibility_mode_adapter(playwright, live_app, catalog):
    """`?webgpu=compatibility` makes the engine ask for Chromium's compatibility-mode adapter first (lower
    default limits: 128 invocations per workgroup): the same tokens, and the adapter named as such. The
    page's bandwidth kernel must fit a default compat device too (once it did not, ran nothing, and
    reported 158 GB/s; now such a kernel throws)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *COMPATIBILITY_FLAGS])
    try:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live_app}?webgpu=compatibility")
        answer = page.evaluate(RUN, {"modelId": MODEL_ID, "prompts": PROMPTS, "maxTokens": MAX_TOKENS})["answers"][0]
        bandwidth = page.evaluate(BANDWIDTH)
    finally:
        browser.close()
    golden = next(m for m in catalog["models"] if m["id"] == MODEL_ID)["self_check"]["golden_token_ids"]
    assert answer["token_ids"] == golden[:-1][:MAX_TOKENS]
    assert answer["stats"]["adapter"].endswith("(compatibility mode)")
    assert bandwidth > 0 and not errors


LOAD = """async (modelId) => {
  const model = window.seam.config.models.find((m) => m.id === modelId);
  try { await window.seam.browserEngine().load(model); return { loaded: true }; }
  catch (error) { return { kind: error.kind, message: error.message }; }
}"""


def test_the_engine_refuses_a_variant_the_adapter_cannot_run(page, live_app):
    # SwiftShader lacks shader-f16; f16 shaders would fail to compile silently and answer garbage.
    page.goto(live_app)
    result = page.evaluate(LOAD, "SmolLM2-135M-Instruct-q4f16_1")
    assert result["kind"] == "FeatureMissingError" and "shader-f16" in result["message"]


def test_a_missing_shard_is_a_download_error(page, default_built, app_server, tmp_path):
    models = models_subset(default_built, tmp_path / "models", MODEL_ID)
    (models / MODEL_ID / "params_shard_2.bin").unlink()
    page.goto(app_server(models).url)
    result = page.evaluate(LOAD, MODEL_ID)
    assert result["kind"] == "DownloadError" and "404" in result["message"]
    assert "params_shard_2.bin" in result["message"]
