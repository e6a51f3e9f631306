"""The browser engine (Web Worker, tvmjs, WebGPU on SwiftShader) through the Seam client's public API, q4f32_1.

Token policy: at temperature 0 the browser must produce exactly the server CPU library's tokens. Both
run the same compiled model on the same weights; their logits differ by about 4e-4 of their scale
(see tests/modelbuild/test_tiny_llama.py), far below the top-2 gaps of these prompts. The engine's
mechanics (tokens, usage, progress, typed errors) are checked on the tiny random Llama; the real model
runs on the compatibility-mode adapter.
"""
import json

import pytest
import requests

from tests.support.api import server_answer, server_reply
from tests.support.browsers import COMPATIBILITY_FLAGS
from tests.support.models import REAL, TINY, catalog_of, models_subset
from tests.support.pages import in_the_engine, run_in_the_engine

MAX_TOKENS = 8  # the golden answer's first 8 tokens

def self_check(models_dir, variant: str) -> tuple[list[dict], list[int]]:
    """The build's self-check prompt (the build chooses it) and the first MAX_TOKENS of its greedy tokens,
    without the stop token they may end with (an answer's token_ids do not hold it)."""
    entry = next(m for m in catalog_of(models_dir)["models"] if m["id"] == variant)
    stop = json.loads((models_dir / entry["path"] / entry["files"]["config"]).read_text())["stop_token_ids"]
    check = entry["self_check"]
    return check["messages"], [t for t in check["golden_token_ids"] if t not in stop][:MAX_TOKENS]


def greedy(messages) -> dict:
    return {"messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}


def test_browser_tokens_equal_the_server_cpu_tokens(page, tiny_server, tiny_models, expected_console_errors):
    variant = f"{TINY}-q4f32_1"
    messages, golden = self_check(tiny_models, variant)
    prompts = [messages]  # (the chat page tests compare more prompts, through the page)
    result = in_the_engine(page, tiny_server.url, variant, [greedy(m) for m in prompts], expected_console_errors)
    entry = next(m for m in catalog_of(tiny_models)["models"] if m["id"] == variant)
    first = result["results"][0]
    assert first["token_ids"] == golden, \
        "the browser's greedy tokens differ from the build's golden tokens for the same prompt"
    for messages, answer in zip(prompts, result["results"]):
        server = server_answer(tiny_server.url, messages, MAX_TOKENS, TINY)
        assert answer["content"] == server["choices"][0]["message"]["content"]
        assert answer["finish"] == server["choices"][0]["finish_reason"]
        assert answer["usage"] == server["usage"]
        assert answer["stats"]["where"] == "browser" and answer["stats"]["adapter"]
        assert answer["stats"]["kernels"] == "software"  # SwiftShader is a software adapter
        assert answer["stats"]["decode_tokens_per_s"] > 0 and answer["stats"]["ttft_s"] > 0
        assert answer["target"] == "browser"
    # Progress went from nothing to the whole download, in bytes; the engine went through every step.
    download = result["progress"]
    assert download[0]["loaded"] < download[-1]["loaded"] == download[-1]["total"] == entry["download_bytes"]
    key = f"{variant}@{entry['version']}@webgpu"
    assert [(s["key"], s["state"], s["phase"]) for s in result["steps"]] == [
        (key, "downloading", None), (key, "loading", "gpu"), (key, "checking", "gpu"), (key, "ready", "gpu")]


def test_the_page_url_forces_the_gpu_kernel_set(page, tiny_server, tiny_models, expected_console_errors):
    """A software adapter can run the GPU set too (only slower): asked for, it runs it, with the same tokens."""
    variant = f"{TINY}-q4f32_1"
    messages, golden = self_check(tiny_models, variant)
    [answer] = run_in_the_engine(page, tiny_server.url + "?kernels=gpu", variant, [greedy(messages)],
                                 expected_console_errors)
    assert answer["stats"]["kernels"] == "gpu"
    assert answer["token_ids"] == golden
    entry = next(m for m in catalog_of(tiny_models)["models"] if m["id"] == variant)
    wasm = [path for path in tiny_server.paths if path.endswith(".wasm") and entry["path"] in path]  # over HTTP
    assert [path.rsplit("/", 1)[1] for path in wasm] == [entry["files"][entry["kernels"]["gpu"]["file"]]]


BANDWIDTH = """async () => {
  const { measureBandwidth } = await import("/client/lib/probe.js");
  const device = await (await navigator.gpu.requestAdapter({ featureLevel: "compatibility" })).requestDevice();
  try { return (await measureBandwidth(device, 16 * 1024 * 1024, 2)).bandwidth_gbps; } finally { device.destroy(); }
}"""


def test_the_engine_runs_on_a_compatibility_mode_adapter(launch_page, live_app, default_built, expected_console_errors):
    """`?webgpu=compatibility` makes the engine ask for Chromium's compatibility-mode adapter first (lower
    default limits: 128 invocations per workgroup): the same tokens, and the adapter named as such. The
    page's bandwidth kernel must fit a default compat device too (once it did not, ran nothing, and
    reported 158 GB/s; now such a kernel throws)."""
    variant = f"{REAL}-q4f32_1"
    page = launch_page(add=COMPATIBILITY_FLAGS)
    messages, golden = self_check(default_built, variant)
    [answer] = run_in_the_engine(page, f"{live_app}?webgpu=compatibility", variant, [greedy(messages)],
                                 expected_console_errors)
    assert answer["token_ids"] == golden
    assert answer["stats"]["adapter"].endswith("(compatibility mode)")
    assert page.evaluate(BANDWIDTH) > 0


def test_the_engine_refuses_a_variant_the_adapter_cannot_run(page, tiny_server, expected_console_errors):
    # SwiftShader lacks shader-f16; f16 shaders would fail to compile silently and answer garbage.
    result = in_the_engine(page, tiny_server.url, f"{TINY}-q4f16_1", [], expected_console_errors)["load"]
    assert result["kind"] == "FeatureMissingError" and "shader-f16" in result["message"]


def test_a_gpu_set_that_does_not_fit_the_limits_falls_back_to_the_software_set(page, tiny_models, app_server, tmp_path,
                                                                             expected_console_errors):
    """Asked for the GPU set on a device whose limits it exceeds, the engine runs the software set and says why."""
    variant = f"{TINY}-q4f32_1"
    models = models_subset(tiny_models, tmp_path / "models", variant)
    catalog = json.loads((models / "manifest.json").read_text())
    catalog["models"][0]["kernels"]["gpu"]["max_invocations_per_workgroup"] = 1_000_000
    (models / "manifest.json").write_text(json.dumps(catalog))
    result = in_the_engine(page, app_server(models).url + "?kernels=gpu", variant, [], expected_console_errors)["engine"]
    assert result["state"] == "ready" and result["kernels"] == "software"
    assert result["kernelsWhy"].startswith("the gpu kernels need 1000000 invocations per workgroup, this GPU allows ")


def test_a_missing_shard_is_a_download_error(page, tiny_models, app_server, tmp_path, expected_console_errors):
    variant = f"{TINY}-q4f32_1"
    models = models_subset(tiny_models, tmp_path / "models", variant)
    (models / variant / "params_shard_2.bin").unlink()
    expected_console_errors.append("404 (NOT FOUND)")
    result = in_the_engine(page, app_server(models).url, variant, [], expected_console_errors)["load"]
    assert result["kind"] == "DownloadError" and "404" in result["message"]
    assert "params_shard_2.bin" in result["message"]


def test_stop_strings_end_the_answer_as_on_the_server(page, tiny_server, expected_console_errors):
    """`stop` in the browser engine: the same text and finish reason as the server's, and the same refusal."""
    base = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 12}
    whole = server_answer(tiny_server.url, base["messages"], 12, TINY)["choices"][0]["message"]["content"]
    middle = whole[len(whole) // 3: len(whole) // 3 + 4]  # four characters from inside the answer
    cases = [{**base, "stop": middle}, {**base, "stop": ["never-said-1", middle[:2] + "\u2603", middle]},
             {**base, "stop": "never-said"}]
    bad = {**base, "stop": ["a", "b", "c", "d", "e"]}
    results = run_in_the_engine(page, tiny_server.url, f"{TINY}-q4f32_1", cases + [bad], expected_console_errors)
    for request, browser in zip(cases, results):
        server = server_reply(tiny_server.url, {**request, "model": TINY})
        assert (browser["content"], browser["finish"]) == (server["choices"][0]["message"]["content"],
                                                          server["choices"][0]["finish_reason"]), request["stop"]
        assert browser["usage"] == server["usage"]
    assert results[0]["finish"] == "stop" and middle not in results[0]["content"]
    assert results[-1]["kind"] == "InvalidRequestError" and "at most 4" in results[-1]["message"]
    refused = requests.post(tiny_server.url + "v1/chat/completions", json={**bad, "model": TINY}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop"


# (seed, temperature, top_p): the seeds' edges, cool and hot temperatures, wide and narrow nuclei.
SAMPLED = [(0, 1.0, 1.0), (1, 0.7, 0.9), (42, 1.3, 1.0), (2**32 - 1, 1.0, 0.8), (7, 2.0, 0.95)]


def test_a_seed_gives_the_servers_tokens_in_the_browser(page, tiny_server, expected_console_errors):
    """Sampling is specified once (router/sampling.py) and written in both languages: with the same seed,
    temperature and top_p the browser's answer is the server's, token for token; a bad seed is refused in
    the same words on both paths."""
    question = [{"role": "user", "content": "Tell me a story."}]
    cases = [{"messages": question, "max_tokens": 16, "seed": seed, "temperature": t, "top_p": p}
             for seed, t, p in SAMPLED]
    bad = {"messages": question, "seed": 2**32}
    results = run_in_the_engine(page, tiny_server.url, f"{TINY}-q4f32_1", cases + [bad], expected_console_errors)
    differ = []
    for request, browser in zip(cases, results):
        server = server_reply(tiny_server.url, {**request, "model": TINY})
        if (browser["content"], browser["usage"]) != (server["choices"][0]["message"]["content"], server["usage"]):
            differ.append((request["seed"], browser["content"], server["choices"][0]["message"]["content"]))
    # The paths' logits differ in their last digits, so a token flips where the top two noisy scores are
    # closer than that: measured about 1 token in 1,500 on this model (router/sampling.py says why), about
    # 1 answer in 90 here. One flipped answer is that; two would be a broken procedure.
    print(f"{len(differ)} of {len(cases)} sampled answers differ between the paths: {differ}")
    assert len(differ) <= 1, f"{len(differ)} of {len(cases)} sampled answers differ between the paths: {differ}"
    assert len({r["content"] for r in results[:-1]}) == len(cases)  # the seeds really draw different answers
    refused = requests.post(tiny_server.url + "v1/chat/completions", json={**bad, "model": TINY}, timeout=60)
    assert refused.status_code == 400
    assert results[-1] == {"kind": "InvalidRequestError", "message": refused.json()["error"]["message"]}


def test_a_prompt_longer_than_a_prefill_chunk_gives_the_servers_tokens(page, app_server, expected_console_errors):
    """A tiny Qwen3 (head_dim 64, prefill chunks of 16 tokens) and a prompt of several chunks: the engine
    prefills it chunk by chunk, each attending to the pages the ones before wrote (TVM's WebGPU merge of the
    two attention states was wrong at this head_dim: build/modelbuild/gpu_attention.py replaces it), and its
    greedy tokens are the server's."""
    from tests.support.tiny_families import build_family
    _, models = build_family("qwen3")
    server = app_server(models)
    request = {"messages": [{"role": "user", "content": "Tell me about the sea, the sky, the mountains and rivers."}],
               "temperature": 0, "max_tokens": 8}
    [browser] = run_in_the_engine(page, server.url, "qwen3-q4f32_1", [request], expected_console_errors)
    served = server_reply(server.url, {**request, "model": "qwen3"})
    assert served["usage"]["prompt_tokens"] > 2 * 16
    assert (browser["content"], browser["usage"]) == (served["choices"][0]["message"]["content"], served["usage"])


# A conversation as a page sends it: each turn the whole history, the last answer included.
TURNS = ["Tell me about the sea.", "And about the mountains?", "Which of the two is older?"]


def conversation_of(server_url: str, model: str, first_question: str, max_tokens: int) -> list[dict]:
    """The greedy requests of a conversation of TURNS (the first replaced), each answer the server's."""
    messages, requests_ = [{"role": "system", "content": "You are terse."}], []
    for question in [first_question, *TURNS[1:]]:
        messages = [*messages, {"role": "user", "content": question}]
        requests_.append({"messages": messages, "temperature": 0, "max_tokens": max_tokens})
        reply = server_reply(server_url, {**requests_[-1], "model": model})["choices"][0]["message"]["content"]
        messages = [*messages, {"role": "assistant", "content": reply}]
    return requests_


@pytest.mark.parametrize("family,kernels", [("llama", "software"), ("llama", "cpu"), ("qwen3", "gpu")])
def test_a_conversation_keeps_its_cache_and_answers_as_a_fresh_prefill(family, kernels, page, app_server, tiny_models,
                                                                       expected_console_errors):
    """The browser engine keeps the cache of the conversation it answered last: a next turn prefills only
    its new tokens (several prefill chunks of 16, over the kept pages) and gives the server's greedy tokens;
    a prompt that does not continue it (the first turn after the self-check, an edited first turn) gets a
    fresh cache. The tiny
    Llama has head_dim 16, the tiny Qwen3 64 (whose WebGPU merge of attention states was TVM's bug)."""
    if family == "llama":
        model, models = TINY, tiny_models
    else:
        from tests.support.tiny_families import build_family
        model, (_, models) = "qwen3", build_family("qwen3")
    server = app_server(models)
    turns = conversation_of(server.url, model, TURNS[0], 12)
    edited = conversation_of(server.url, model, "Tell me about the forest.", 12)
    requests_ = [*turns, edited[-1]]
    result = in_the_engine(page, server.url, f"{model}-q4f32_1", requests_, expected_console_errors, kernels=kernels)
    assert "load" not in result, result["load"]
    for request, browser in zip(requests_, result["results"]):
        served = server_reply(server.url, {**request, "model": model})
        assert (browser["content"], browser["usage"]) == (served["choices"][0]["message"]["content"], served["usage"])
        assert browser["stats"]["kernels"] == kernels
    cached = [r["stats"]["cached_tokens"] for r in result["results"]]
    prompts = [r["usage"]["prompt_tokens"] for r in result["results"]]
    assert cached[0] == 0  # the self-check's prompt, answered before, is not this conversation's
    for turn in (1, 2):  # all of the turn before (its prompt and answer) is kept; its new tokens span chunks
        assert cached[turn] >= prompts[turn - 1] and prompts[turn] - cached[turn] > 16, (cached, prompts)
    assert cached[3] == 0, (cached, prompts)  # the first turn edited: another conversation
