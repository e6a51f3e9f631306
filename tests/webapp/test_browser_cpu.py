"""The browser's CPU path: where WebGPU is off, the variant's wasm SIMD build answers in the page.

Chromium without `--enable-unsafe-webgpu` and Firefox ESR with `dom.webgpu.enabled` off have no WebGPU
adapter: with "This device only" the router sends the answer to the CPU build, and its greedy tokens must
equal the server's. A Firefox without wasm SIMD gets the server, and the reason.
"""
import json

import pytest
from playwright.sync_api import expect
from tokenizers import Tokenizer

from tests.support.api import server_answer
from tests.support.firefox import WASM_SIMD_OFF, WEBGPU_OFF, open_firefox
from tests.support.models import REAL
from tests.support.pages import ANSWER_IN_THE_PAGE, ChatPage

CPU_VARIANT = f"{REAL}-q4f32_1"  # the float32 preset has the CPU build
GREEDY = {"temperature": 0, "max_tokens": 12, "system": "Be brief."}
NO_ADAPTER = "async () => !navigator.gpu || !(await navigator.gpu.requestAdapter())"


def test_without_webgpu_this_device_only_answers_on_the_cpu_like_the_server(launch_page, live_app):
    page = launch_page(drop=["--enable-unsafe-webgpu"])
    chat = ChatPage(page, live_app)
    page.goto(live_app)
    assert page.evaluate(NO_ADAPTER)
    chat.open(preference="local_only", **GREEDY)
    expect(chat.route).to_contain_text("This browser, CPU")
    loaded = chat.wait_until_loaded()  # after its self-check against the catalog's golden tokens
    assert loaded["id"] == CPU_VARIANT and "CPU" in loaded["adapter"]
    history = [{"role": "system", "content": GREEDY["system"]}]
    for question in ["What is the capital of France?", "And of Italy?"]:
        history.append({"role": "user", "content": question})
        shown = chat.ask(question)
        expected = server_answer(live_app, history, GREEDY["max_tokens"])["choices"][0]
        assert (shown["text"], shown["finish_reason"]) == (expected["message"]["content"], expected["finish_reason"])
        assert shown["where"] == "browser" and shown["stats"].startswith("this browser, CPU")
        assert "decode" in shown["stats"]
        history.append({"role": "assistant", "content": shown["text"]})
    decision = page.evaluate("window.seam.status().decision")
    assert (decision["backend"], decision["predictions"]["browser"]["source"]) == ("cpu", "measured")


@pytest.fixture(scope="module")
def self_check(default_built):
    entry = next(m for m in json.loads((default_built / "manifest.json").read_text())["models"] if m["id"] == CPU_VARIANT)
    return entry["self_check"], Tokenizer.from_file(str(default_built / CPU_VARIANT / entry["files"]["tokenizer"]))


def test_firefox_without_webgpu_answers_on_the_cpu_with_the_golden_tokens(live_app, self_check, default_built):
    check, tokenizer = self_check
    golden = check["golden_token_ids"]  # the server's CPU library's greedy tokens, from the build
    stop = json.loads((default_built / CPU_VARIANT / "mlc-chat-config.json").read_text())["stop_token_ids"]
    answer = golden[:-1] if golden[-1] in stop else golden
    with open_firefox(WEBGPU_OFF) as firefox:
        firefox.goto(live_app)
        assert firefox.evaluate(NO_ADAPTER)
        shown = firefox.evaluate(ANSWER_IN_THE_PAGE, {"prompt": check["messages"][-1]["content"], "maxTokens": len(golden)})
    assert (shown["decision"]["variant"], shown["decision"]["backend"], shown["loaded"]) == (CPU_VARIANT, "cpu", CPU_VARIANT)
    assert shown["state"] == "done" and shown["stats"].startswith("this browser, CPU")
    assert shown["text"] == tokenizer.decode(answer)


ROUTE_AND_LOAD = """async (variant) => {
  const until = async (check) => { while (!check()) await new Promise((r) => setTimeout(r, 200)); };
  await until(() => window.seam && document.getElementById("route").dataset.target !== "pending");
  const load = await window.seam.prepare({ variant, kernels: "cpu" })
    .then(() => null, (error) => ({ kind: error.kind, message: error.message }));
  return { route: document.getElementById("route").textContent, decision: window.seam.status().decision, load };
}"""


def test_firefox_without_wasm_simd_is_told_why_and_gets_the_server(live_app):
    with open_firefox(WASM_SIMD_OFF) as firefox:
        firefox.goto(live_app)
        shown = firefox.evaluate(ROUTE_AND_LOAD, CPU_VARIANT)
    assert shown["decision"]["target"] == "cloud" and shown["decision"]["backend"] is None
    assert "no_wasm_simd" in [r["code"] for r in shown["decision"]["reasons"]]
    assert shown["load"]["kind"] == "WasmSimdNotAvailableError", shown["load"]
    assert "WebAssembly SIMD" in shown["load"]["message"]
