"""The chat page end to end, in headless Chromium on WebGPU (SwiftShader).

Each test drives the page as a person would (settings, Enter, Stop, New chat) against the Flask app,
and checks what the page shows against what the server's CPU library says for the same request. The
first test checks fidelity on the real default model; the others check the page's mechanics on the tiny
random Llama (same tokenizer and chat template), which answers in milliseconds.
"""
import shutil

import requests
from playwright.sync_api import expect

from tests.support.api import server_answer
from tests.support.models import REAL, TINY, models_subset
from tests.support.pages import ChatPage

REAL_VARIANT = f"{REAL}-q4f32_1"   # SwiftShader has no shader-f16
TINY_VARIANT = f"{TINY}-q4f32_1"
SYSTEM = "Be brief."               # shorter than the template's default system prompt: faster prefill
GREEDY = {"temperature": 0, "max_tokens": 6, "system": SYSTEM}


def test_chat_in_the_browser_matches_the_server_turn_by_turn(page, live_app, default_built, self_check_passed):
    self_check_passed(default_built)
    # WebGPU (`?kernels=software`): over SwiftShader the router would pick the CPU build (test_browser_cpu.py)
    chat = ChatPage(page, live_app + "?kernels=software").open(preference="local_only", **GREEDY)
    loaded = chat.wait_until_loaded()
    assert loaded["id"] == REAL_VARIANT and loaded["adapter"]
    history = [{"role": "system", "content": SYSTEM}]
    for question in ["What is the capital of France?", "And of Italy?"]:
        history.append({"role": "user", "content": question})
        shown = chat.ask(question)
        expected = server_answer(live_app, history, GREEDY["max_tokens"])["choices"][0]
        assert shown["text"] == expected["message"]["content"]
        assert shown["finish_reason"] == expected["finish_reason"]
        assert shown["where"] == "browser" and shown["state"] == "done"
        # Where it ran, on which adapter, and the three speeds.
        assert shown["stats"].startswith("browser · ") and "first token" in shown["stats"]
        assert "prefill" in shown["stats"] and "decode" in shown["stats"]
        history.append({"role": "assistant", "content": shown["text"]})
    assert chat.messages.count() == 4


def test_a_reload_downloads_nothing(page, tiny_server, tiny_models, self_check_passed):
    server = tiny_server
    self_check_passed(tiny_models)
    chat = ChatPage(page, server.url).open(preference="local_only", **GREEDY)
    chat.wait_until_loaded()
    expect(page.locator("#loading")).to_be_hidden()
    first = chat.ask("Hi!")
    downloaded = server.model_paths(TINY_VARIANT)
    assert any(p.endswith(".bin") for p in downloaded) and any(p.endswith(".wasm") for p in downloaded)

    server.paths.clear()
    page.reload()
    chat.settings(preference="local_only", **GREEDY)
    chat.wait_until_loaded()
    assert chat.ask("Hi!")["text"] == first["text"], "the model loaded from the cache answers differently"
    assert [p for p in server.paths if p.startswith("/models/") and p != "/models/manifest.json"] == [], \
        "a reload downloaded model files again"
    assert page.evaluate("window.seam.status().decision.cached") is True


def test_a_corrupted_shard_is_reported_not_used(page, tiny_models, app_server, tmp_path):
    models = models_subset(tiny_models, tmp_path / "models", TINY_VARIANT, corrupt="params_shard_1.bin")
    server = app_server(models)
    chat = ChatPage(page, server.url).open(preference="local_only", **GREEDY)
    expect(chat.notice).to_contain_text("params_shard_1.bin is corrupt", timeout=300_000)
    expect(chat.notice).to_have_attribute("data-kind", "error")
    # Fetched twice (a spoiled transfer is retried once), then given up: nothing can answer here.
    shard = [p for p in server.model_paths(TINY_VARIANT) if p.endswith("/params_shard_1.bin")]
    assert len(shard) == 2, "a spoiled shard was not fetched exactly once more before giving up"
    expect(chat.route).to_have_attribute("data-target", "none", timeout=60_000)
    answer = chat.ask("Hi!")
    assert answer["state"] == "error" and answer["error_kind"] == "NoEngineError"
    assert "params_shard_1.bin is corrupt" in answer["stats"] and answer["text"] == ""
    # Nothing corrupt was stored: the cache lacks that shard, so a fixed server would be asked again.
    stored = page.evaluate("""async () => (await (await caches.open("seam-models")).keys()).map((r) => r.url)""")
    assert not any(url.endswith("params_shard_1.bin") for url in stored)


def test_typing_works_mid_answer_and_stop_and_new_chat(page, tiny_server, tiny_models, self_check_passed):
    self_check_passed(tiny_models)
    # On WebGPU, where an answer of this model takes long enough to stop mid-way (the CPU build is faster)
    chat = ChatPage(page, tiny_server.url + "?kernels=software").open(preference="local_only", temperature=0,
                                                                      max_tokens=900, system=SYSTEM)
    chat.wait_until_loaded()
    answer = chat.send("Write a long story about a dragon.")  # 900 tokens: about half a minute here
    expect(answer.locator(".content")).not_to_be_empty(timeout=60_000)
    # The worker computes; the page still takes input while the answer streams.
    chat.prompt.type("typed while the model answers")
    expect(chat.prompt).to_have_value("typed while the model answers")
    expect(answer).to_have_attribute("data-state", "streaming")

    chat.stop()
    stopped = chat.wait_for_answer(answer)
    assert stopped["state"] == "stopped" and "stopped" in stopped["stats"]
    tokens = int(stopped["stats"].split(" tokens")[0].rsplit("· ", 1)[1])
    assert 1 <= tokens < 900, "Stop did not end the answer early"
    # The worker said it was done with that answer (its last message): nothing more can arrive.
    page.wait_for_function("() => window.seam.status().answering === 0")
    assert answer.locator(".content").inner_text() == stopped["text"], "text kept arriving after Stop"

    chat.new_chat()
    expect(chat.messages).to_have_count(0)
    chat.prompt.fill("")
    chat.settings(max_tokens=GREEDY["max_tokens"])
    fresh = chat.ask("What is the capital of France?")
    expected = server_answer(tiny_server.url, [{"role": "system", "content": SYSTEM},
                                               {"role": "user", "content": "What is the capital of France?"}],
                             GREEDY["max_tokens"], TINY)
    assert fresh["text"] == expected["choices"][0]["message"]["content"], \
        "after New chat the answer differs from a fresh conversation's: the old one leaked into it"


def test_the_page_picks_a_variant_this_adapter_can_run(page, tiny_server):
    chat = ChatPage(page, tiny_server.url).open(preference="local_only")
    decision = page.evaluate("window.seam.status().decision")
    assert decision["variant"] == TINY_VARIANT
    assert any(r["code"] == "missing_feature" and "shader-f16" in r["message"] for r in decision["reasons"])
    expect(chat.route).to_contain_text(TINY_VARIANT)


def test_the_page_says_why_when_no_variant_can_run(page, tiny_models, app_server, tmp_path):
    server = app_server(models_subset(tiny_models, tmp_path / "models", f"{TINY}-q4f16_1"))
    chat = ChatPage(page, server.url).open()
    page.locator("#settings summary").click()
    page.locator("#preference").select_option("local_only")
    expect(chat.route).to_have_attribute("data-target", "none", timeout=60_000)
    expect(chat.notice).to_contain_text("needs WebGPU feature shader-f16")
    answer = chat.ask("Hi!")
    assert answer["state"] == "error" and "shader-f16" in answer["stats"]


def test_the_page_offers_every_model_and_asks_for_the_one_picked(page, tiny_models, app_server, tmp_path):
    """Two models in one catalog (the tiny Llama and a tiny Qwen2): /v1/models lists both, the page offers
    both, and the one picked is the one the router decides for and the server answers with."""
    from modelbuild.manifest import write_manifest
    from tests.support.tiny_families import build_family
    _, qwen2_models = build_family("qwen2")
    models = tmp_path / "models"
    for folder in (tiny_models / f"{TINY}-q4f32_1", qwen2_models / "qwen2-q4f32_1"):
        shutil.copytree(folder, models / folder.name)
    write_manifest(models)
    server = app_server(models)
    assert [m["id"] for m in requests.get(server.url + "v1/models", timeout=30).json()["data"]] == ["qwen2", TINY]
    chat = ChatPage(page, server.url).open(preference="cloud_only")
    assert page.eval_on_selector_all("#model option", "(options) => options.map((o) => o.value)") == ["qwen2", TINY]
    chat.settings(model="qwen2", temperature=0, max_tokens=6, system=SYSTEM)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    shown = chat.ask("What is the capital of France?")
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}]
    assert shown["text"] == server_answer(server.url, history, 6, "qwen2")["choices"][0]["message"]["content"]
    assert shown["text"] != server_answer(server.url, history, 6, TINY)["choices"][0]["message"]["content"]
    assert page.evaluate("window.seam.status().decision.model") == "qwen2"
    assert page.evaluate("window.seam.status().report.model") == "qwen2"
