"""The browser's CPU path: where WebGPU is off, the variant's wasm SIMD build answers in the page.

Chromium without `--enable-unsafe-webgpu` and Firefox ESR with `dom.webgpu.enabled` off have no WebGPU
adapter: with "This device only" the router sends the answer to the CPU build, and its greedy tokens must
equal the server's. A Firefox without wasm SIMD gets the server, and the reason. The chat page is
cross-origin isolated, so the CPU build runs on every core; without isolation, or without its helper
threads, it runs on one and says why.
"""
import json

import pytest
from playwright.sync_api import expect
from tokenizers import Tokenizer

from tests.support.api import server_answer, server_reply
from tests.support.firefox import WASM_SIMD_OFF, WEBGPU_OFF, open_firefox
from tests.support.models import REAL, TINY
from tests.support.pages import ANSWER_IN_THE_PAGE, ChatPage, run_in_the_engine

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


# --- the CPU build on every core (engine/cpu_threads.js) ----------------------------------------------------
TINY_CPU = f"{TINY}-q4f32_1"
STORY = {"messages": [{"role": "user", "content": "Tell me a story about a cat."}], "max_tokens": 24, "temperature": 0}


def cpu_answer(page, url: str, expected_console_errors) -> dict:
    """The tiny model's greedy STORY from the page's CPU build (its routing cut, its engine told "cpu")."""
    [answer] = run_in_the_engine(page, url, TINY_CPU, [STORY], expected_console_errors, kernels="cpu")
    assert answer["target"] == "browser", answer
    return answer


def test_the_cpu_build_runs_on_every_core_and_on_one_with_the_servers_tokens(page, tiny_server, expected_console_errors):
    """The chat page is cross-origin isolated: the CPU build runs on a thread per core (a helper Worker per extra
    core over one shared memory), in a tab's own engine (Chromium's SharedWorker is not isolated), and writes
    the server's greedy tokens; `?threads=1` runs it on one (in the shared engine), and writes the same."""
    server = server_reply(tiny_server.url, {"model": TINY_CPU, **STORY})
    cores = min(page.evaluate("navigator.hardwareConcurrency"), 8)
    assert cores > 1, "this machine has one core: the threads cannot be tested here"
    threaded = cpu_answer(page, tiny_server.url, expected_console_errors)
    assert threaded["content"] == server["choices"][0]["message"]["content"]
    stats = threaded["stats"]
    assert (stats["threads"], stats["threads_why"]) == (cores, None)
    assert stats["adapter"] == f"this browser, CPU (wasm SIMD, {cores} threads)"
    assert stats["engine_host"] == "dedicated" and "SharedWorker cannot share memory" in stats["engine_host_why"]
    assert any(p.endswith("-wasm-cpu-threads.wasm") for p in tiny_server.model_paths(TINY_CPU))
    one = cpu_answer(page, tiny_server.url + "?threads=1", expected_console_errors)
    assert one["token_ids"] == threaded["token_ids"] and len(one["token_ids"]) == STORY["max_tokens"]
    assert (one["stats"]["threads"], one["stats"]["threads_why"]) == (1, "1 thread asked")


def test_without_isolation_or_helpers_the_cpu_build_runs_on_one_thread_and_says_why(
        page, app_server, tiny_models, tiny_server, expected_console_errors):
    """A server that does not isolate its pages (SEAM_CROSS_ORIGIN_ISOLATED off): one thread, the single-thread
    build, and why. A helper whose script fails to load: the threaded build's loops on the engine's thread
    alone, and why; the answer is the same either way."""
    plain = app_server(tiny_models, CROSS_ORIGIN_ISOLATED=False)
    alone = cpu_answer(page, plain.url, expected_console_errors)
    assert alone["stats"]["threads"] == 1
    assert alone["stats"]["threads_why"] == "the page is not cross-origin isolated, so no shared memory"
    assert not any(p.endswith("-threads.wasm") for p in plain.model_paths(TINY_CPU))

    tiny_server.faults.add("/client/lib/engine/cpu_thread.js", "flip", 0)  # a syntax error in the helper
    expected_console_errors.append("SyntaxError")
    broken = cpu_answer(page, tiny_server.url, expected_console_errors)
    assert broken["stats"]["threads"] == 1
    assert broken["stats"]["threads_why"].startswith("its helper threads could not start"), broken["stats"]
    assert broken["token_ids"] == alone["token_ids"]
