"""The browser engine (Web Worker, tvmjs, WebGPU on SwiftShader) with the real default model, q4f32_1.

Token policy: at temperature 0 the browser must produce exactly the server CPU library's tokens. Both
run the same compiled model on the same weights; their logits differ by about 4e-4 of their scale
(see tests/modelbuild/test_tiny_llama.py), far below the top-2 gaps of these prompts.
"""
import json

import pytest
import requests

MODEL_ID = "SmolLM2-135M-Instruct-q4f32_1"
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Is 17 a prime number?"}],
]
MAX_TOKENS = 8  # SwiftShader decodes this model at about 0.1 token/s (DLight's GEMV uses barriers, slow on a CPU)

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


def server_answer(live_app, messages):
    body = {"model": "SmolLM2-135M-Instruct", "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
    return requests.post(live_app + "v1/chat/completions", json=body, timeout=600).json()


def test_browser_tokens_equal_the_server_cpu_tokens(page, live_app, catalog):
    page.goto(live_app)
    result = page.evaluate(RUN, {"modelId": MODEL_ID, "prompts": PROMPTS, "maxTokens": MAX_TOKENS})
    entry = next(m for m in catalog["models"] if m["id"] == MODEL_ID)
    golden = entry["self_check"]["golden_token_ids"]
    first = result["answers"][0]
    assert first["token_ids"] == golden[:-1][:MAX_TOKENS]  # the golden list ends with the stop token
    for messages, answer in zip(PROMPTS, result["answers"]):
        server = server_answer(live_app, messages)
        assert answer["content"] == server["choices"][0]["message"]["content"]
        assert answer["finish"] == server["choices"][0]["finish_reason"]
        assert answer["usage"] == server["usage"]
        assert answer["stats"]["where"] == "browser" and answer["stats"]["adapter"]
        assert answer["stats"]["decode_tokens_per_s"] > 0 and answer["stats"]["ttft_s"] > 0
    # Progress went from nothing to the whole download, in bytes.
    assert result["progress"][0]["loaded"] < result["progress"][-1]["loaded"] == entry["download_bytes"]
