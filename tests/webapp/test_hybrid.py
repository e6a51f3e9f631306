"""The hybrid seam end to end: one conversation, answered by the browser or the server, handed over
mid-answer when one path fails, with the model downloaded, checked and replaced in the background.

Real Chromium (SwiftShader WebGPU), the tiny random Llama (tests/support/tiny_llama.py: the real tokenizer and
chat template, random weights, built by the same pipeline; its greedy answers are long runs of unrelated
words, so a lost or repeated piece at the seam shows), the Flask app over real HTTP. Faults are real too:
the server drops or spoils responses (tests/conftest.py `Faults`), the page's test hook destroys the GPU
device, the network path to the server's API is cut or held with Playwright's routing.
"""
import json

import pytest
import requests
from playwright.sync_api import expect

from tests.support.api import server_answer, server_reply
from tests.support.models import TINY, TINY_PART_BYTES, models_subset
from tests.support.pages import LOAD_TIMEOUT_MS, ChatPage, HeldRequests

VARIANT = f"{TINY}-q4f32_1"  # SwiftShader has no shader-f16
F16_VARIANT = f"{TINY}-q4f16_1"
SYSTEM = "Be brief."
GREEDY = {"temperature": 0, "max_tokens": 6, "system": SYSTEM}
FRANCE = "What is the capital of France?"
NO_WEBGPU = ["--enable-unsafe-webgpu"]


def asked(*questions_and_answers, question):
    history = [{"role": "system", "content": SYSTEM}]
    for q, a in questions_and_answers:
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return history + [{"role": "user", "content": question}]


def servers_text(server, history, max_tokens=GREEDY["max_tokens"]) -> str:
    return server_answer(server.url, history, max_tokens, TINY)["choices"][0]["message"]["content"]


def cached_urls(page) -> list[str]:
    return page.evaluate("""async () => (await (await caches.open("seam-models")).keys()).map((r) => r.url)""")


def set_catalog(models_dir, **changes) -> dict:
    """Rewrite the served catalog's one entry, as `make build-model` would (atomically)."""
    catalog = json.loads((models_dir / "manifest.json").read_text())
    catalog["models"][0].update(changes)
    (models_dir / ".manifest.tmp").write_text(json.dumps(catalog))
    (models_dir / ".manifest.tmp").replace(models_dir / "manifest.json")
    return catalog["models"][0]


@pytest.fixture
def gpu_only_server(app_server, tiny_models, tmp_path):
    """The tiny model's q4f16_1 variant alone: it has no CPU build, so a browser without WebGPU cannot run
    it (tests/webapp/test_browser_cpu.py has the browsers that run a CPU build)."""
    return app_server(models_subset(tiny_models, tmp_path / "models", F16_VARIANT))


def test_without_webgpu_the_server_answers_the_whole_chat(launch_page, gpu_only_server):
    tiny_server = gpu_only_server
    page = launch_page(drop=NO_WEBGPU)  # as in browsers that lack WebGPU
    assert page.evaluate("async () => !navigator.gpu || !(await navigator.gpu.requestAdapter())")
    chat = ChatPage(page, tiny_server.url).open(**GREEDY)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("this browser cannot run the model")
    expect(chat.notice).to_contain_text("this browser has no usable WebGPU")
    first = chat.ask(FRANCE)
    second = chat.ask("And of Italy?")
    for turn, (shown, history) in enumerate(((first, asked(question=FRANCE)),
                                             (second, asked((FRANCE, first["text"]), question="And of Italy?"))), 1):
        assert (shown["where"], shown["state"]) == ("cloud", "done"), f"turn {turn} did not come from the server"
        assert shown["text"] == servers_text(tiny_server, history), f"turn {turn}: the page showed another answer " \
            "than the API gives for the same conversation (history or template differ)"
        assert shown["stats"].startswith("server · ")
    assert tiny_server.model_paths(F16_VARIANT) == [], "a browser without WebGPU downloaded the model"


def test_a_probe_that_claims_webgpu_it_lacks_ends_on_the_server(launch_page, gpu_only_server):
    """The report says WebGPU works; the engine finds none, says so, and the server answers."""
    tiny_server = gpu_only_server
    page = launch_page(drop=NO_WEBGPU)

    def lie(route):
        report = json.loads(route.request.post_data)
        report["webgpu"] = {"available": True, "features": ["shader-f16"], "limits": {}}
        route.continue_(post_data=json.dumps(report))

    page.route("**/api/route", lie)
    chat = ChatPage(page, tiny_server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("no usable WebGPU", timeout=60_000)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("cannot run")
    shown = chat.ask(FRANCE)
    assert (shown["where"], shown["state"]) == ("cloud", "done")
    assert shown["text"] == servers_text(tiny_server, asked(question=FRANCE))


def test_first_visit_answers_from_the_server_then_the_browser_then_follows_new_versions(page, tiny_models, app_server,
                                                                                          tmp_path):
    models = models_subset(tiny_models, tmp_path / "models", VARIANT)
    server = app_server(models)
    # The last shard waits in the browser until the test lets it go: the download is under way meanwhile.
    held = HeldRequests(server, "/params_shard_2.bin")
    chat = ChatPage(page, server.url).open(**GREEDY)
    # First visit: the server answers while the model downloads in the background, with progress shown.
    decision = page.evaluate("window.seam.status().decision")
    assert (decision["target"], decision["reasons"][0]["code"], decision["prefetch"]) == ("cloud", "not_downloaded", True)
    expect(page.locator("#loading")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text(" MB")
    first = chat.ask(FRANCE)
    assert first["where"] == "cloud", "the first visit's answer did not come from the server"
    assert first["text"] == servers_text(server, asked(question=FRANCE))
    held.release()

    # Downloaded, verified and self-checked: the router now sends answers to this browser.
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    second = chat.ask("And of Italy?")
    assert second["where"] == "browser", "once the model was checked, the answer still did not come from the browser"
    assert second["text"] == servers_text(server, asked((FRANCE, first["text"]), question="And of Italy?")), \
        "the browser continued the conversation differently from the server (history after the path changed)"
    v1 = page.evaluate("window.seam.status().decision.version")
    fleet = requests.get(server.url + "api/fleet", timeout=10).json()
    assert fleet["cached"] == [{"id": VARIANT, "version": v1, "clients": 1}]
    assert [(c["version"], c["passed"], c["failed"]) for c in fleet["self_checks"]] == [(v1, 1, 0)], \
        "the first load's self-check was not reported to the fleet as passed"

    # A rebuild publishes a new version: the page learns it, the server answers while the new version
    # downloads, and the old one is deleted once the new one is checked.
    v2 = "a" * 16
    set_catalog(models, version=v2)
    server.paths.clear()
    held = HeldRequests(server, f"/{v2}/params_shard_2.bin")
    page.reload()
    expect(chat.route).to_have_attribute("data-reason", "update_available", timeout=60_000)
    expect(chat.route).to_contain_text(f"{v1} -> {v2}")
    held.release()
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    assert page.evaluate("window.seam.status().decision.version") == v2
    assert any(p.startswith(f"/models/{VARIANT}/{v2}/params_shard") for p in server.paths)
    urls = cached_urls(page)
    assert any(f"/{v2}/" in u for u in urls), "the new version is not in the cache"
    assert not any(f"/{v1}/" in u for u in urls), "the old version was not deleted after the new one was checked"
    versions = requests.get(server.url + "api/fleet", timeout=10).json()["cached"]
    assert versions == [{"id": VARIANT, "version": v2, "clients": 1}]

    # A rebuild the catalog marks compatible (same weights): the cached version stays, nothing downloads.
    set_catalog(models, version="b" * 16, compatible_versions=[v2])
    server.paths.clear()
    page.reload()
    expect(chat.route).to_have_attribute("data-reason", "compatible_cached", timeout=60_000)
    assert chat.wait_until_loaded()["id"] == VARIANT
    assert page.evaluate("window.seam.status().engine.version") == v2
    assert server.model_paths(VARIANT) == [], "a compatible version was downloaded again"


def test_a_new_version_is_fetched_and_checked_beside_the_old_one_and_taken_between_answers(page, tiny_models,
                                                                                           app_server, tmp_path,
                                                                                           self_check_passed):
    """A page left open across a rebuild, never reloaded: the next routing learns of the new version; it
    downloads and is self-checked while the old one stays loaded (and its files stay cached) and the server
    answers; once it is ready, the old one retires, its files are deleted, and the next answer runs on it."""
    models = models_subset(tiny_models, tmp_path / "models", VARIANT)
    server = app_server(models)
    self_check_passed(models)  # v1 passed here before; v2 is checked when it loads
    chat = ChatPage(page, server.url).open(**GREEDY)
    v1 = chat.wait_until_loaded()["version"]
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    assert chat.ask(FRANCE)["where"] == "browser"
    page.evaluate("() => { window.updates = []; window.seam.on('update', (u) => window.updates.push(u)); }")

    v2 = "c" * 16
    set_catalog(models, version=v2)
    held = HeldRequests(server, f"/{v2}/params_shard_2.bin")
    during = chat.ask("And of Italy?")  # asked with the page open: the router now knows of v2
    assert during["where"] == "cloud", "the answer waited for the new version instead of the server giving it"
    assert chat.decision()["update"] == {"from": v1, "to": v2}
    engines = {e["version"]: e["state"] for e in page.evaluate("window.seam.status().engines")}
    assert engines == {v1: "ready", v2: "downloading"}, engines
    assert any(f"/{v1}/" in u for u in cached_urls(page)), "the old version's files went before the new one was ready"

    held.release()
    page.wait_for_function(f"() => window.seam.status().engine?.version === '{v2}'", timeout=LOAD_TIMEOUT_MS)
    engines = {e["version"]: e["state"] for e in page.evaluate("window.seam.status().engines")}
    assert engines == {v1: "retired", v2: "ready"}, engines
    # The old version's files go once the new one is ready (deleting them takes a moment after the switch).
    page.wait_for_function("""async (v1) => !(await (await caches.open("seam-models")).keys())
                                                 .some((r) => r.url.includes(`/${v1}/`))""", arg=v1, timeout=10_000)
    assert any(f"/{v2}/" in u for u in cached_urls(page))
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    after = chat.ask("And of Spain?")
    assert after["where"] == "browser"
    assert after["text"] == servers_text(server, asked((FRANCE, chat.answers.nth(0).locator(".content").inner_text()),
                                                       ("And of Italy?", during["text"]), question="And of Spain?"))
    assert page.evaluate("window.updates") == [{"id": VARIANT, "from": v1, "to": v2, "state": "available"},
                                               {"id": VARIANT, "from": v1, "to": v2, "state": "ready"}]
    checks = requests.get(server.url + "api/fleet", timeout=10).json()["self_checks"]
    assert (v2, 1, 0) in [(c["version"], c["passed"], c["failed"]) for c in checks], "the new version was not self-checked"


def test_each_path_takes_over_when_the_other_fails_mid_answer(page, tiny_models, app_server, self_check_passed,
                                                             expected_console_errors):
    server = app_server(tiny_models, test_hooks=True)
    self_check_passed(tiny_models)
    # What Chromium logs for the cut below, and what tvmjs logs when the hook destroys the device.
    expected_console_errors += ["net::ERR_CONNECTION_REFUSED", "Device lost, calling Instance.dispose()"]
    # The server's API is unreachable while the model is still downloading (its last shard held): the
    # router sends the answer to the server, and the browser takes it over once the model is ready.
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    held = HeldRequests(server, "/params_shard_2.bin")
    chat = ChatPage(page, server.url + "?kernels=software").open(**GREEDY)  # WebGPU, whose device the test loses
    expect(chat.route).to_have_attribute("data-target", "cloud")
    answer = chat.send(FRANCE)
    expect(chat.notice).to_contain_text("The server could not answer")
    held.release()
    first = chat.wait_for_answer(answer)
    assert (first["where"], first["state"]) == ("browser", "done"), "the browser did not take over from a dead server"
    assert first["text"] == servers_text(server, asked(question=FRANCE)), \
        "the browser's takeover answer differs from what the server would have said"
    page.unroute("**/v1/chat/completions")

    # The GPU is lost three tokens into an answer: the server goes on from the text already shown.
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    chat.new_chat()
    chat.settings(max_tokens=12)
    page.evaluate("window.seam.test.loseDeviceAfter(3)")
    shown = chat.ask(FRANCE)
    expected = server_answer(server.url, asked(question=FRANCE), 12, TINY)["choices"][0]
    assert page.locator("#messages .message.assistant").last.get_attribute("data-handoff") == "browser-to-cloud", \
        "the lost device did not hand the answer to the server"
    assert shown["text"] == expected["message"]["content"], \
        "text was lost or repeated where the server took over the answer"
    assert shown["state"] == "done" and shown["finish_reason"] == expected["finish_reason"]
    assert shown["stats"].startswith("browser, then server")
    expect(chat.notice).to_contain_text("GPU failed")
    expect(chat.notice).to_contain_text("lost")
    # The router knows the browser failed: the next answers come from the server.
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    assert "failed on this device" in json.dumps(page.evaluate("window.seam.status().decision.reasons"))


def test_a_sampled_answer_handed_over_mid_way_is_the_servers_whole_answer(page, tiny_models, app_server,
                                                                         self_check_passed, expected_console_errors):
    """The page gives every answer a seed and hands the other path the position reached, so a sampled answer
    continued on the server draws what the browser would have: the text is the server's uncut answer."""
    server = app_server(tiny_models, test_hooks=True)
    self_check_passed(tiny_models)
    expected_console_errors.append("Device lost, calling Instance.dispose()")
    sampling = {"temperature": 0.9, "top_p": 0.95, "seed": 2024, "max_tokens": 12}
    chat = ChatPage(page, server.url).open(system=SYSTEM, **sampling)
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    page.evaluate("window.seam.test.loseDeviceAfter(4)")
    shown = chat.ask(FRANCE)
    assert page.locator("#messages .message.assistant").last.get_attribute("data-handoff") == "browser-to-cloud"
    whole = server_reply(server.url, {"model": TINY, "messages": asked(question=FRANCE), **sampling})["choices"][0]
    assert shown["text"] == whole["message"]["content"], "the server drew other tokens than the browser would have"
    assert shown["finish_reason"] == whole["finish_reason"]


def test_a_failed_self_check_routes_to_the_server_and_is_reported(page, tiny_models, app_server, tmp_path):
    models = models_subset(tiny_models, tmp_path / "models", VARIANT)
    catalog = json.loads((models / "manifest.json").read_text())
    check = catalog["models"][0]["self_check"]
    set_catalog(models, self_check={**check, "golden_token_ids": [check["golden_token_ids"][0] + 1,
                                                                  *check["golden_token_ids"][1:]]})
    server = app_server(models)
    chat = ChatPage(page, server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("self-check failed", timeout=LOAD_TIMEOUT_MS)
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    expect(chat.route).to_contain_text("cannot run")
    assert "failed on this device (self-check failed" in json.dumps(page.evaluate("window.seam.status().decision.reasons"))
    checks = requests.get(server.url + "api/fleet", timeout=10).json()["self_checks"]
    assert [(c["id"], c["passed"], c["failed"]) for c in checks] == [(VARIANT, 0, 1)]
    assert chat.ask(FRANCE)["where"] == "cloud"
    # Remembered across visits: the device is not trusted with this version again.
    page.reload()
    expect(chat.route).to_have_attribute("data-target", "cloud", timeout=60_000)
    assert page.evaluate("window.seam.status().report.unreliable_models")[0]["id"] == VARIANT


LOAD = """async (variant) => {
    while (!window.seam) await new Promise((r) => setTimeout(r, 50));
    try { await window.seam.prepare({ variant }); return "loaded"; }
    catch (error) { return `${error.kind}: ${error.message}`; }
}"""

START_LOAD = """async (variant) => {
    while (!window.seam) await new Promise((r) => setTimeout(r, 50));
    window.loadResult = null;
    window.seam.prepare({ variant })
      .then(() => { window.loadResult = "loaded"; }, (error) => { window.loadResult = `${error.kind}: ${error.message}`; });
}"""

WAIT_UNTIL_STORED = """async (key) => {  // true once a cache entry's URL ends with `key`; false after two minutes
    for (const deadline = Date.now() + 120_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100)))
      if ((await (await caches.open("seam-models")).keys()).some((r) => r.url.endsWith(key))) return true;
    return false;
}"""


def test_downloads_resume_and_refetch_what_arrived_wrong(page, tiny_server, tiny_models, expected_console_errors):
    server = tiny_server  # shards of about 1.5 MB, stored in parts of 256 KiB as they arrive
    # The test alone says what loads: the page's own routing (and so its prefetch) is cut.
    expected_console_errors.append("net::ERR_FAILED")
    page.route("**/api/route", lambda route: route.abort())
    base = f"/models/{VARIANT}/"
    # A reload in the middle of a shard: the parts stored so far stay, the rest comes by Range.
    server.faults.add("params_shard_1.bin", "stall", 2 * TINY_PART_BYTES + 75_000)
    # Then a dropped connection, once a part of the next shard arrived: the download goes on from the stored
    # part by itself; then that rest arrives spoiled: the sha256 finds it, and the shard is fetched again whole.
    server.faults.add("params_shard_2.bin", "stall", TINY_PART_BYTES + 40_000)
    server.faults.add("params_shard_2.bin", "flip", 1_000)
    page.goto(server.url)
    page.evaluate(START_LOAD, VARIANT)
    assert page.evaluate(WAIT_UNTIL_STORED, f"params_shard_1.bin?seam-part={TINY_PART_BYTES}"), \
        "the stalled shard's second part was never stored"
    server.ranges.clear()
    page.reload()
    page.evaluate(START_LOAD, VARIANT)
    assert page.evaluate(WAIT_UNTIL_STORED, "params_shard_2.bin?seam-part=0"), "shard 2's first part was never stored"
    server.faults.drop_stalled()
    page.wait_for_function("() => window.loadResult !== null", timeout=120_000)
    assert page.evaluate("window.loadResult") == "loaded"
    asked_for = [(p.removeprefix(base).split("/", 1)[1], r) for p, r in server.ranges if p.startswith(base)]
    shards = [(f, r) for f, r in asked_for if f.startswith("params_shard")]
    assert [f for f, _ in shards if f == "params_shard_0.bin"] == [], "a shard finished before the reload was fetched again"
    assert [r for f, r in shards if f == "params_shard_1.bin"] == [f"bytes={2 * TINY_PART_BYTES}-"], \
        "after a reload, the interrupted shard did not resume from its two stored parts"
    assert [r for f, r in shards if f == "params_shard_2.bin"] == [None, f"bytes={TINY_PART_BYTES}-", None], \
        "a dropped shard did not resume from its stored part, or its spoiled rest was not fetched again whole"
    urls = cached_urls(page)
    assert not any("seam-part" in u for u in urls), "parts were left behind once their files were whole"
    shard_count = len(json.loads((tiny_models / VARIANT / "tensor-cache.json").read_text())["records"])
    assert sum(u.endswith(".bin") for u in urls) == shard_count


def test_too_little_storage_means_the_server_answers(page, tiny_server):
    server = tiny_server
    # Chromium enforces this quota on writes, though navigator.storage.estimate() does not report it: the
    # download (12 MB, the wasm alone 7 MB) runs into it, stops, and gives back the space it took.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": server.url.rstrip("/"), "quotaSize": 4_000_000})
    chat = ChatPage(page, server.url).open(**GREEDY)
    expect(chat.notice).to_contain_text("storage for the site is full", timeout=120_000)
    expect(chat.route).to_have_attribute("data-target", "cloud")
    expect(chat.route).to_contain_text("cannot run")
    assert chat.ask(FRANCE)["where"] == "cloud"
    assert not [u for u in cached_urls(page) if f"/models/{VARIANT}/" in u], "a failed download kept its files"
    # The engine alone (its JS API) says the same, with its type.
    assert page.evaluate(LOAD, VARIANT).startswith("StorageQuotaError")
    assert not [u for u in cached_urls(page) if f"/models/{VARIANT}/" in u]


def test_the_router_predicts_this_device_from_its_own_measured_speed(page, tiny_server, tiny_models,
                                                                     self_check_passed):
    """Before each answer the page asks the router with that answer's numbers and this browser's measured
    speeds; once it has measured, the prediction is within 1.5x of what the next answer does. On WebGPU
    (`?kernels=software`): the tiny model's CPU build answers in tens of milliseconds while the browser
    is still compiling its wasm functions to their fast tier, one by one, so each answer is faster than
    the last (measured 629, 775, 1273 tokens/s); the real model's first answer is long enough for that."""
    self_check_passed(tiny_models)
    chat = ChatPage(page, tiny_server.url + "?kernels=software").open(preference="local_only", temperature=0,
                                                                      max_tokens=48)
    chat.wait_until_loaded()
    assert chat.ask("Hello")["where"] == "browser"  # the first answer on this device: measured from here on
    for question in ("Tell me more.", "And then?"):
        answer = chat.ask(question)
        report, decision = page.evaluate("[window.seam.status().report, window.seam.status().decision]")
        assert report["prompt_tokens"] > 20 and "prompt_tokens_estimated" not in report  # the model's tokenizer
        assert report["max_tokens"] == 48 and [m["id"] for m in report["measured"]] == [VARIANT]
        predicted = decision["predictions"]["browser"]
        actual = float(answer["stats"].split("decode ")[1].split(" tok/s")[0])
        print(f"predicted {predicted['tokens_per_s']} tok/s ({predicted['source']}), then decoded {actual}")
        assert predicted["source"] == "measured"
        assert 1 / 1.5 <= actual / predicted["tokens_per_s"] <= 1.5


def test_an_unreachable_router_leaves_the_last_decision_standing(page, tiny_server, tiny_models, self_check_passed,
                                                                expected_console_errors):
    """The page asks the router before every answer; when it cannot, a browser that holds the model still
    answers, as last decided."""
    self_check_passed(tiny_models)
    expected_console_errors.append("net::ERR_FAILED")
    chat = ChatPage(page, tiny_server.url).open(**GREEDY)
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    page.route("**/api/route", lambda route: route.abort())
    answer = chat.ask(FRANCE)
    assert (answer["where"], answer["state"]) == ("browser", "done")
    expect(chat.route).to_contain_text("could not ask the router")
    expect(chat.route).to_contain_text("answering as last decided (This browser)")
